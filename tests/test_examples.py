"""Every example under examples/ runs, and does what it says."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import servers
import trio
import trio.testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_main(name: str) -> Any:
    return runpy.run_path(str(EXAMPLES / name))["main"]


def run_example(name: str, autojump_threshold: float = 0) -> Any:
    main = example_main(name)
    clock = trio.testing.MockClock(autojump_threshold=autojump_threshold)
    return trio.run(main, clock=clock)


def test_database() -> None:
    seen = run_example("database.py")
    assert seen["replies"] > 30
    assert seen["OFF"] > 20
    assert seen["lost"] <= 1


def test_nested_supervisors() -> None:
    assert run_example("nested.py") == ["shard 0: hello", None, "shard 2: hello"]


def test_http_api() -> None:
    # Real sockets: time jumps only once all has been idle a little while.
    seen = run_example("http_api.py", autojump_threshold=0.01)
    assert seen["most_in_flight"] == 10  # serve(concurrency=10) filled up
    assert seen["shed"] > 100  # of the burst of 300, beyond 10 + 100 queued
    assert seen["5xx"] >= 3  # the third trips the breaker
    assert seen["timeout"] >= 3  # the hung API: the second trip
    assert seen["trips"] >= 2
    assert seen["failed_starts"] >= 2  # a 503 and a hung health check
    assert seen["OFF"] > seen["shed"]  # OFF while tripped, besides the shed
    assert seen["ok"] > 150  # before, between and after the outages
    assert seen["state"] == "ON"  # recovered from the last outage


@servers.coredis_runs_on_this_trio
async def test_redis_batch(redis_server: servers.ServerProcess) -> None:
    # A real redis-server, on the real clock.
    seen = await example_main("redis_batch.py")(redis_server.port)
    assert seen["right"] == seen["calls"] == 1000
    # Batches of up to 100: ten round trips, give or take a few.
    assert 10 <= seen["round_trips"] <= 20


def test_attempts() -> None:
    seen = run_example("attempts.py")
    calls = seen["calls"]
    # Re-attempts carry the transient resets: nearly every call is answered.
    assert seen["ok"] >= 0.97 * calls
    assert seen.get("OFF", 0) == 0  # two replicas were always ON
    # The budget: extra attempts at most a fifth of the calls, and the floor.
    assert seen["extra"] <= 0.2 * calls + 10 * 3
    assert seen["requests"] == calls + seen["extra"]
    # The down replica: a few calls, then OFF (its trips), then trials.
    assert seen["trips"] >= 1
    assert seen["while_down"] < 0.05 * calls
    assert seen["slowest"] < 1.0


def test_guard() -> None:
    seen = run_example("guard.py")
    # Fifty callers, a 5 s outage: the failures that trip it (the calls in
    # flight when it went down), then one trial a second.
    assert seen["trips"] == 1
    assert seen["seen_while_down"] <= 50 + 5
    assert 4 <= seen["trials"] <= 6
    assert seen["OFF"] > 1000
    assert seen["state"] == "ON"
    assert seen["reply"] > 50 * 100  # served before and after the outage
