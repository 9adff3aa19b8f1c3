from __future__ import annotations

import functools

import pytest
import trio.testing

from breaky.__main__ import main
from breaky._demo import MIN_DURATION, demo


@pytest.mark.parametrize("duration", [MIN_DURATION, 12])
def test_the_demo_trips_off_recovers_and_answers_every_call(
    capsys: pytest.CaptureFixture[str], duration: int
) -> None:
    # The server is a real subprocess and its socket real I/O: the mock clock
    # only jumps once everything has been idle for a moment of real time.
    clock = trio.testing.MockClock(autojump_threshold=0.002)
    assert main(["demo", "--duration", str(duration)], clock=clock) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "key-value server listening on 127.0.0.1:" in lines[0]
    assert any("STARTING -> ON" in line for line in lines)
    assert any("killed the server" in line for line in lines)
    assert any("ON -> OFF" in line for line in lines)
    assert any("restarted the server" in line for line in lines)
    assert any("OFF -> ON" in line for line in lines)
    assert sum("calls/s" in line for line in lines) == duration
    assert lines[-1] == "every call got exactly one answer"
    assert lines[-2].endswith("unanswered: 0")


@pytest.mark.parametrize("duration", ["9.5", "-1", "nan", "inf"])
def test_a_duration_too_short_for_an_outage_is_refused(
    capsys: pytest.CaptureFixture[str], duration: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--duration", duration])
    assert exited.value.code == 2
    assert "--duration must be at least 10 seconds" in capsys.readouterr().err


def test_the_demo_function_refuses_a_short_duration_too() -> None:
    with pytest.raises(ValueError, match=r"at least 10 seconds.*got 5"):
        trio.run(functools.partial(demo, duration=5))


def test_the_command_line_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "demo" in capsys.readouterr().err
