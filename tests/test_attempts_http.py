"""Re-attempts against a real HTTP server: Hypercorn behind a counting proxy.

The two figures of issue 23 that need a real server, as tests assert them
(the benchmarks measure their ratios): during an outage, re-attempts add no
request to the dead port once the guard is OFF, and what they add before is
within the budget; with transient errors (one request in ten answered 503),
re-attempts make nearly every call succeed for about a ninth more requests.

Real I/O, so the real clock: the limits are generous.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio
from test_guard_http import (
    CALLERS,
    FAILURE_THRESHOLD,
    LIMITS,
    RETRY_TIMEOUT,
    CountingProxy,
    outage,
)

import breaky

if TYPE_CHECKING:
    from collections.abc import Callable

    import servers
    from test_guard_http import Get


async def timed_out(guard: breaky.Guard, get: Get) -> object:
    """``guard.run(get)``; a call timeout is an error the callers go past.

    (On a loaded machine a request can take longer than the guard's
    ``call_timeout``; ``outage()``'s callers then call again, as after an
    error of httpx's.)
    """
    try:
        return await guard.run(get)
    except breaky.CallTimeout as exc:
        msg = "the guard's call timeout"
        raise httpx.TimeoutException(msg) from exc


@pytest.mark.timeout(120)
async def test_reattempts_add_nothing_at_a_dead_port_once_off(
    http_server: servers.ServerProcess,
    record_property: Callable[[str, object], None],
) -> None:
    proxy = CountingProxy(http_server.port)
    figures = {}
    stats = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}",
            timeout=None,  # noqa: S113 - the guard's call_timeout is the one
            limits=LIMITS,
        ) as client:
            for attempts in (1, 3):
                guard = breaky.Guard(
                    f"http, attempts={attempts}",
                    attempts=attempts,
                    retry_timeout=RETRY_TIMEOUT,
                    failure_threshold=FAILURE_THRESHOLD,
                    call_timeout=2,
                    failure_exceptions=httpx.TransportError,
                )
                name = f"breaky, attempts={attempts}"
                figures[attempts] = await outage(
                    name,
                    client,
                    functools.partial(timed_out, guard),
                    http_server,
                    proxy,
                )
                stats[attempts] = guard.statistics()
        nursery.cancel_scope.cancel()

    one, three = figures[1], figures[3]
    ratio = three.reached_dead_port / max(one.reached_dead_port, 1)
    for figure in (one, three):
        print(figure)  # noqa: T201 - the figures docs/performance.md quotes
        record_property(figure.library, attrs.asdict(figure))
    print(f"dead-port requests, attempts=3 over attempts=1: {ratio:.2f}")  # noqa: T201
    record_property("ratio", ratio)
    # Once OFF, only the trials: no re-attempt while the guard is not ON.
    periods = math.ceil(three.down_for / RETRY_TIMEOUT)
    assert 1 <= three.sent_after_trip <= periods, three
    # Before the trip, what re-attempts added is within the budget: its floor
    # (10 per 10 s) and a fifth of the calls, over the test's two windows.
    made = stats[3].calls - stats[3].reattempts
    assert stats[3].reattempts <= 2 * 10 + 0.2 * made, stats[3]
    assert three.sent_before_trip <= 2 * CALLERS + stats[3].reattempts, three
    sent = three.sent_before_trip + three.sent_after_trip
    assert three.reached_dead_port <= sent + CALLERS, three
    # Recovery is bounded as in test_guard_http: relative to how long the
    # same callers took to warm up in this run, so a busy machine passes.
    limit = max(5 * RETRY_TIMEOUT, 2 * RETRY_TIMEOUT + 3 * three.warmed_up_in)
    assert three.recovered_in < limit, three
    assert stats[3].pending == 0, stats[3]


@pytest.mark.timeout(120)
async def test_reattempts_carry_calls_over_transient_errors(
    http_server: servers.ServerProcess,
    record_property: Callable[[str, object], None],
) -> None:
    proxy = CountingProxy(http_server.port)
    guard = breaky.Guard(
        "flaky",
        attempts=3,
        failure_rate=0.5,
        failure_window=10,
        minimum_calls=20,
        call_timeout=5,
        failure_exceptions=httpx.HTTPError,
    )
    requests = 0
    succeeded = 0

    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}",
            timeout=None,  # noqa: S113 - the guard's call_timeout is the one
            limits=LIMITS,
        ) as client:

            async def get() -> httpx.Response:
                nonlocal requests
                requests += 1
                response = await client.get("/flaky")
                return response.raise_for_status()

            async def caller() -> None:
                nonlocal succeeded
                for _ in range(50):
                    try:
                        await guard.run(get)
                    except httpx.HTTPStatusError:
                        continue
                    succeeded += 1

            async with trio.open_nursery() as callers:
                for _ in range(20):
                    callers.start_soon(caller)
            stats = guard.statistics()
        nursery.cancel_scope.cancel()

    calls = 20 * 50
    extra = stats.reattempts / calls
    record_property("transient", {"succeeded": succeeded, "extra": extra})
    print(f"transient: {succeeded}/{calls} succeeded, {extra:.3f} extra per call")  # noqa: T201
    assert succeeded >= 0.995 * calls, stats
    assert extra <= 0.12, stats
    assert requests == calls + stats.reattempts
    assert (stats.trips, stats.pending, stats.hedges) == (0, 0, 0), stats
