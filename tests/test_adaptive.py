"""An adaptive limit under load, on the mock clock (issue 24).

The dependency is :class:`workers.Workers`: a number of workers, 50 ms a
request, the rest queued inside it. Without a limit, 100 callers against 8
workers wait ~12x the unloaded latency for each answer; with
``breaky.Adaptive`` the dependency must stay busy (>= 0.8x its capacity)
and fast (p99 <= 4x unloaded), follow its capacity down and up within 10 s,
and learn a limit per key of a keyed group and for a resource's serve().
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from workers import Workers

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio.testing import MockClock as Clock

UNLOADED = 0.050  # seconds a request takes with nothing queued

# Thousands of calls each, all on the mock clock: seconds of CPU, not of
# sleep, which a loaded machine may stretch.
pytestmark = pytest.mark.timeout(120)


async def load(
    call: Callable[[], Awaitable[object]], *, callers: int, until: float
) -> list[object]:
    """``callers`` tasks calling ``call()`` back to back until ``until``."""
    answers: list[object] = []

    async def caller() -> None:
        while trio.current_time() < until:
            answer = await call()
            answers.append(answer)
            if answer is OFF:
                await trio.sleep(UNLOADED)  # shed: try again a little later

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return answers


async def watch(read: Callable[[], int | None], into: list[tuple[float, int]]) -> None:
    """Record ``read()`` every 100 ms (cancel to stop)."""
    while True:
        value = read()
        assert value is not None
        into.append((trio.current_time(), value))
        await trio.sleep(0.1)


def between(trace: list[tuple[float, int]], start: float, end: float) -> list[int]:
    return [value for t, value in trace if start <= t < end]


async def test_no_limit_queues_inside_the_dependency(autojump_clock: Clock) -> None:
    # The figure, as a floor: what the limit is for.
    dep = Workers(8, UNLOADED)
    api = breaky.Guard("api", call_timeout=None)
    await load(lambda: api.run(dep.request), callers=100, until=10)
    assert dep.p99(2, 10) > 10 * UNLOADED


async def test_the_limit_keeps_the_dependency_busy_and_fast(
    autojump_clock: Clock,
) -> None:
    dep = Workers(8, UNLOADED)
    api = breaky.Guard(
        "api", max_concurrent=breaky.Adaptive(initial=20), call_timeout=None
    )
    trace: list[tuple[float, int]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, lambda: api.statistics().concurrency_limit, trace)
        answers = await load(lambda: api.run(dep.request), callers=100, until=30)
        nursery.cancel_scope.cancel()
    assert OFF not in answers
    assert dep.throughput(5, 30) >= 0.8 * dep.capacity()
    assert dep.p99(5, 30) <= 4 * UNLOADED
    limits = between(trace, 5, 30)
    assert 8 <= statistics.median(limits) <= 16
    stats = api.statistics()
    assert (stats.state, stats.failures, stats.shed, stats.trips) == (State.ON, 0, 0, 0)


async def test_the_limit_follows_the_capacity_down_and_back_up(
    autojump_clock: Clock,
) -> None:
    dep = Workers(8, UNLOADED)
    api = breaky.Guard(
        "api", max_concurrent=breaky.Adaptive(initial=8), call_timeout=None
    )
    trace: list[tuple[float, int]] = []

    async def halve_then_recover() -> None:
        await trio.sleep(20)
        dep.resize(4)
        await trio.sleep(20)
        dep.resize(8)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, lambda: api.statistics().concurrency_limit, trace)
        nursery.start_soon(halve_then_recover)
        await load(lambda: api.run(dep.request), callers=100, until=60)
        nursery.cancel_scope.cancel()
    # Halved at 20 s: down within 10 s, and the dependency stays fast.
    assert statistics.median(between(trace, 30, 40)) <= 2 * 4
    assert dep.throughput(30, 40) >= 0.8 * 4 / UNLOADED
    assert dep.p99(30, 40) <= 4 * UNLOADED
    # Recovered at 40 s: up within 10 s.
    assert statistics.median(between(trace, 50, 60)) >= 8
    assert dep.throughput(50, 60) >= 0.8 * 8 / UNLOADED
    assert dep.p99(50, 60) <= 4 * UNLOADED


async def test_each_key_of_a_keyed_guard_learns_its_own_limit(
    autojump_clock: Clock,
) -> None:
    hosts = {"big": Workers(16, UNLOADED), "small": Workers(2, UNLOADED)}
    traces: dict[str, list[tuple[float, int]]] = {host: [] for host in hosts}
    totals: list[tuple[float, int]] = []
    async with breaky.open_supervisor() as sup:
        group = sup.keyed_guard(
            "hosts", max_concurrent=breaky.Adaptive(initial=10), call_timeout=None
        )

        def caller(host: str) -> Callable[[], Awaitable[object]]:
            return lambda: group.run(host, hosts[host].request)

        async with trio.open_nursery() as nursery:
            for host in hosts:
                nursery.start_soon(
                    lambda host=host: load(caller(host), callers=40, until=60)
                )
            await trio.sleep(1)  # both keys exist by now
            for host in hosts:
                nursery.start_soon(
                    watch,
                    lambda host=host: group[host].statistics().concurrency_limit,
                    traces[host],
                )
            nursery.start_soon(
                watch, lambda: group.statistics().concurrency_limit, totals
            )
            await trio.sleep(28)
            nursery.cancel_scope.cancel()
    for host, dep in hosts.items():
        assert dep.throughput(5, 29) >= 0.8 * dep.capacity(), host
        assert dep.p99(5, 29) <= 4 * UNLOADED, host
    big = statistics.median(between(traces["big"], 5, 29))
    small = statistics.median(between(traces["small"], 5, 29))
    assert 16 <= big <= 2 * 16
    assert 2 <= small <= 2 * 2
    # The group's figure sums its keys' limits.
    assert statistics.median(between(totals, 5, 29)) == pytest.approx(
        big + small, rel=0.3
    )


async def test_serve_learns_a_resource_limit(autojump_clock: Clock) -> None:
    dep = Workers(8, UNLOADED)

    async def handler(request: breaky.Request[Any, Any]) -> None:
        request.reply(await dep.request(request.message))

    async def resource(inbox: breaky.Inbox[Any, Any], *, task_status: Any) -> None:
        task_status.started()
        await inbox.serve(handler, concurrency=breaky.Adaptive(initial=20))

    trace: list[tuple[float, int]] = []
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource, call_timeout=None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, lambda: db.statistics().concurrency_limit, trace)
            answers = await load(lambda: db.call("q"), callers=100, until=30)
            nursery.cancel_scope.cancel()
        assert set(answers) == {"q"}
        assert dep.throughput(5, 30) >= 0.8 * dep.capacity()
        assert dep.p99(5, 30) <= 4 * UNLOADED
        assert 8 <= statistics.median(between(trace, 5, 30)) <= 16
        stats = db.statistics()
        assert (stats.state, stats.failures, stats.trips) == (State.ON, 0, 0)


async def test_overload_is_shed_and_never_trips(autojump_clock: Clock) -> None:
    dep = Workers(4, UNLOADED)
    api = breaky.Guard(
        "api",
        max_concurrent=breaky.Adaptive(initial=4),
        max_queued=10,
        call_timeout=1,
        failure_threshold=1,
    )
    answers = await load(lambda: api.run(dep.request), callers=40, until=10)
    stats = api.statistics()
    assert OFF in answers
    assert stats.shed == answers.count(OFF) > 0
    assert (stats.state, stats.failures, stats.trips, stats.timeouts) == (
        State.ON,
        0,
        0,
        0,
    )
    assert dep.throughput(2, 10) >= 0.8 * dep.capacity()


async def test_timeouts_lower_the_limit(autojump_clock: Clock) -> None:
    api = breaky.Guard(
        "api",
        max_concurrent=breaky.Adaptive(initial=40, probe_interval=1000),
        call_timeout=0.5,
        failure_threshold=1000,
    )
    dep = Workers(40, UNLOADED)
    hung = False

    async def call() -> object:
        try:
            return await api.run(trio.sleep_forever if hung else dep.request)
        except breaky.CallTimeout:
            return None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: load(call, callers=40, until=10))
        await trio.sleep(5)
        before = api.statistics().concurrency_limit
        hung = True
    after = api.statistics().concurrency_limit
    assert before is not None
    assert after is not None
    assert before >= 40
    assert after <= before / 4
    assert api.statistics().timeouts > 0


async def test_a_fixed_limit_reports_itself_and_no_limit_none() -> None:
    assert breaky.Guard("a", max_concurrent=7).statistics().concurrency_limit == 7
    assert breaky.Guard("b").statistics().concurrency_limit is None
    adaptive = breaky.Guard("c", max_concurrent=breaky.Adaptive(initial=12))
    assert adaptive.statistics().concurrency_limit == 12
    assert adaptive.concurrency_limit == 12


async def test_serve_reports_its_limit_while_it_serves(autojump_clock: Clock) -> None:
    go = trio.Event()

    async def echo(request: breaky.Request[Any, Any]) -> None:
        request.reply(request.message)

    async def resource(inbox: breaky.Inbox[Any, Any], *, task_status: Any) -> None:
        task_status.started()
        await go.wait()
        await inbox.serve(echo, concurrency=3)

    async def shard(
        inbox: breaky.Inbox[Any, Any], key: str, *, task_status: Any
    ) -> None:
        await resource(inbox, task_status=task_status)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        assert db.statistics().concurrency_limit is None
        go.set()
        assert await db.call("x") == "x"
        assert db.statistics().concurrency_limit == 3
        keyed = sup.keyed_breaker("shards", shard)
        assert keyed.statistics().concurrency_limit is None
        assert await keyed.call("s1", "y") == "y"
        assert keyed.statistics().concurrency_limit == 3


async def test_an_adaptive_serve_crashes_like_a_fixed_one(
    autojump_clock: Clock,
) -> None:
    seen: list[str] = []

    async def handler(request: breaky.Request[Any, Any]) -> None:
        if request.message == "boom":
            raise LookupError(request.message)
        await trio.sleep(1)  # cancelled by the crash
        request.reply(request.message)  # pragma: no cover - never reached

    async def resource(inbox: breaky.Inbox[Any, Any], *, task_status: Any) -> None:
        task_status.started()
        try:
            await inbox.serve(handler, concurrency=breaky.Adaptive(initial=4))
        except LookupError:
            seen.append("crashed")
            raise

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource, call_timeout=None)
        lost: list[str] = []

        async def call(message: str) -> None:
            try:
                await db.call(message)
            except breaky.ResourceLost:
                lost.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "slow")
            await trio.testing.wait_all_tasks_blocked()
            await call("boom")
        assert sorted(lost) == ["boom", "slow"]
        assert seen == ["crashed"]
        assert db.statistics().crashes == 1


@pytest.mark.parametrize("concurrency", [2, breaky.Adaptive(initial=2)])
async def test_a_handler_closing_the_inbox_ends_serve_with_closed_resource_error(
    autojump_clock: Clock, concurrency: int | breaky.Adaptive
) -> None:
    raised: list[BaseException] = []

    async def resource(inbox: breaky.Inbox[Any, Any], *, task_status: Any) -> None:
        async def handler(request: breaky.Request[Any, Any]) -> None:
            request.reply(request.message)
            await inbox.aclose()  # the resource's own mistake

        task_status.started()
        try:
            await inbox.serve(handler, concurrency=concurrency)
        except trio.ClosedResourceError as exc:
            raised.append(exc)
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource, call_timeout=None)
        assert await db.call("q") == "q"
        await trio.testing.wait_all_tasks_blocked()
        assert [type(exc) for exc in raised] == [trio.ClosedResourceError]
        stats = db.statistics()
        assert (stats.state, stats.crashes) == (State.ON, 0)
        assert stats.concurrency_limit is None  # serve() returned: no limit
