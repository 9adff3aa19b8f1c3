from __future__ import annotations

import functools

import pytest
import trio

from breaky.__main__ import main
from breaky._demo import MIN_DURATION, demo, verdict


def test_the_shortest_demo_trips_off_recovers_and_answers_every_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The real clock: the server is a real subprocess, its socket real I/O.
    # (Under a mock clock, time jumps while a reply is on the wire and the
    # demo's 1 s call timeout fires on a healthy server when the machine is
    # busy.) The shortest accepted duration keeps it to 10 seconds.
    assert main(["demo", "--duration", str(MIN_DURATION)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "key-value server listening on 127.0.0.1:" in lines[0]
    assert any("STARTING -> ON" in line for line in lines)
    assert any("killed the server" in line for line in lines)
    assert any("ON -> OFF" in line for line in lines)
    assert any("restarted the server" in line for line in lines)
    assert any("OFF -> ON" in line for line in lines)
    assert sum("calls/s" in line for line in lines) == MIN_DURATION
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


@pytest.mark.parametrize(
    ("unanswered", "recovered", "last_lines", "status"),
    [
        (0, True, ["every call got exactly one answer"], 0),
        (2, True, ["SOME CALLS WERE NOT ANSWERED"], 1),
        (
            0,
            False,
            [
                "every call got exactly one answer",
                "the breaker did not trip and recover in time",
            ],
            1,
        ),
    ],
)
def test_the_demo_passes_only_when_every_guarantee_held(
    unanswered: int, recovered: bool, last_lines: list[str], status: int
) -> None:
    assert verdict(unanswered=unanswered, recovered=recovered) == (last_lines, status)
