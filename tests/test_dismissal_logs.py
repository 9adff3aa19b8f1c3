"""An instance that breaky cancels is not reported as having returned.

A resource that runs several tasks (``serve(concurrency=2)``, or a nursery of
its own) ends on a group of ``Cancelled`` when breaky cancels it, not on one
``Cancelled``; the log must still say only what happened.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio
import trio.testing

import breaky

if TYPE_CHECKING:
    from collections.abc import Callable


async def failing_pair(
    inbox: breaky.Inbox[int, int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()

    async def handle(request: breaky.Request[int, int]) -> None:
        await trio.sleep(1)
        request.fail(ValueError(request.message))

    await inbox.serve(handle, concurrency=2)


async def call(breaker: breaky.CircuitBreaker[int, int], n: int) -> None:
    with contextlib.suppress(ValueError, breaky.ResourceLost):
        await breaker.call(n)


async def test_a_trip_that_cancels_two_handlers_logs_no_return(
    autojump_clock: trio.testing.MockClock, log_records: Callable[[], list[str]]
) -> None:
    async with breaky.open_supervisor() as sup:
        pair = await sup.start_circuit_breaker(
            "pair",
            failing_pair,
            policy=breaky.Policy(failure_threshold=1, failure_exceptions=ValueError),
        )
        async with trio.open_nursery() as callers:
            for n in range(2):
                callers.start_soon(call, pair, n)
        assert pair.state is breaky.State.OFF
        stats = pair.statistics()
    assert (stats.errors, stats.lost, stats.crashes) == (1, 1, 0)
    # Its end is not worth a record: breaky ended it (the trip says why).
    assert [m for m in log_records() if m.startswith("breaker 'pair': ")] == []


async def two_tasks_never_started(
    inbox: breaky.Inbox[int, int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        nursery.start_soon(trio.sleep_forever)


async def test_a_start_timeout_that_cancels_two_tasks_logs_only_the_timeout(
    autojump_clock: trio.testing.MockClock, log_records: Callable[[], list[str]]
) -> None:
    async with breaky.open_supervisor() as sup:
        stuck = await sup.start_circuit_breaker(
            "stuck",
            two_tasks_never_started,
            policy=breaky.Policy(failure_threshold=1, start_timeout=1),
        )
        assert stuck.statistics().failed_starts == 1
    assert [m for m in log_records() if m.startswith("breaker 'stuck': ")] == [
        "breaker 'stuck': the resource did not start within start_timeout (1 s)"
    ]
