from __future__ import annotations

import pytest
import trio.testing

from breaky.__main__ import main


def test_the_demo_trips_off_recovers_and_answers_every_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    assert main(["demo"], clock=clock) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "breaker 'db' is ON (the resource started)" in lines[1]
    assert any("turned OFF after 3 failures" in line for line in lines)
    assert any("trying to start the resource" in line for line in lines)
    assert "breaker 'db' stopped" in lines[-2]
    assert lines[-1].endswith("unanswered: 0")
    # Both kinds of answer were seen: the outage was felt, then recovered from.
    assert ", OFF: 0," not in lines[-1]
    assert ", replies: 0," not in lines[-1]


def test_the_command_line_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "demo" in capsys.readouterr().err
