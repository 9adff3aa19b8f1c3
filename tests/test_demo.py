from __future__ import annotations

import functools
import io
import socket
import sys

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from breaky.__main__ import main
from breaky._demo.demo import MIN_DURATION, demo, verdict


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


class Lines(io.StringIO):
    """Output that tells a waiting test when a line containing a text is out."""

    def __init__(self) -> None:
        super().__init__()
        self.written = trio.Event()

    def write(self, text: str, /) -> int:
        self.written.set()
        self.written = trio.Event()
        return super().write(text)

    async def wait_for(self, text: str) -> str:
        while True:
            for line in self.getvalue().splitlines():
                if text in line:
                    return line
            await self.written.wait()


async def test_the_demo_serves_metrics_while_it_runs(
    mock_clock: trio.testing.MockClock,
) -> None:
    # Real I/O: a subprocess, sockets, and an HTTP server thread.
    mock_clock.autojump_threshold = 0.002
    out = Lines()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(demo, out, duration=600, metrics_port=0))
        line = await out.wait_for("Prometheus metrics at http://127.0.0.1:")
        url = line.split(" at ")[1]
        await out.wait_for("STARTING -> ON")
        # The demo's callers keep calling while the scrape is served.
        response = await trio.to_thread.run_sync(
            functools.partial(httpx.get, url, timeout=30)
        )
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    states = {s.labels["state"]: s.value for s in families["breaky_state"].samples}
    # Which state depends on when the scrape came: exactly one is 1.
    assert set(states) == {"starting", "on", "off", "forced_off", "stopped"}
    assert sorted(states.values()) == [0, 0, 0, 0, 1]
    outcomes = {
        s.labels["outcome"]
        for s in families["breaky_calls"].samples
        if s.name == "breaky_calls_total" and s.labels["breaker"] == "kv"
    }
    assert outcomes == {
        "reply",
        "error",
        "off",
        "shed",
        "timeout",
        "lost",
        "cancelled",
    }


def test_metrics_port_refuses_what_is_not_a_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for bad in ("http", "-1", "65536", "1.5"):
        with pytest.raises(SystemExit) as exited:
            main(["demo", "--metrics-port", bad])
        assert exited.value.code == 2
        error = capsys.readouterr().err
        assert "argument --metrics-port: must be a TCP port from 0 to 65535" in error
        assert repr(bad) in error


def test_metrics_port_in_use_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--metrics-port", str(port)]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"cannot serve metrics on 127.0.0.1:{port}: ")
    assert "in use" in out


def test_metrics_port_without_prometheus_client(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert main(["demo", "--metrics-port", "0"]) == 2
    assert "pip install 'breaky[prometheus]'" in capsys.readouterr().out
