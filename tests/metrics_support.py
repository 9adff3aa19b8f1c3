"""A scripted run whose statistics the exporters' tests compare against."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from support import World, service

import breaky
from breaky import OFF, State
from breaky.testing import wait_for_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Every outcome label and the statistics field it reports; written out here
# rather than taken from breaky, so that the tests check the exporters' lists.
OUTCOMES = {
    "reply": "replies",
    "error": "errors",
    "off": "off",
    "shed": "shed",
    "timeout": "timeouts",
    "lost": "lost",
    "cancelled": "cancelled",
}
COUNTERS = [
    "casts",
    "crashes",
    "failed_starts",
    "restarts",
    "retries",
    "trips",
    "slow_calls",
    "fleet_holds",
    "reattempts",
    "hedges",
    "attempts_denied",
]
# A guard's own counters (a resource breaker's stay 0), and the fleet's.
GUARD_ONLY = {"reattempts", "hedges", "attempts_denied"}
STATES = {
    State.STARTING: "starting",
    State.ON: "on",
    State.OFF: "off",
    State.FORCED_OFF: "forced_off",
    State.STOPPED: "stopped",
}

POLICY = breaky.Policy(
    failure_threshold=4,
    retry_timeout=10,
    call_timeout=None,
    slow_call_duration=1,
    max_queued=1,
)


async def hold(db: breaky.CircuitBreaker[Any, Any]) -> None:
    with pytest.raises(breaky.ResourceLost):
        await db.call(("hold",))


async def queue(db: breaky.CircuitBreaker[Any, Any]) -> None:
    assert await db.call("queued") is OFF  # when the supervisor closes


@asynccontextmanager
async def scripted_supervisor() -> AsyncIterator[breaky.Supervisor]:
    """Calls, an outage, a trip and a recovery, a call shed, two left pending.

    Yields a supervisor with three breakers: ``db``, ON after all that with
    every statistic above zero; ``idle``, ON; ``forced``, FORCED_OFF.
    """
    world = World()
    async with trio.open_nursery() as nursery, breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, policy=POLICY)
        await sup.start_circuit_breaker("idle", service, World())
        forced = await sup.start_circuit_breaker("forced", service, World())
        forced.force_off()

        assert await db.call("ok") == "ok"
        with pytest.raises(LookupError):
            await db.call(("fail", LookupError()))
        assert await db.cast("cast") is None
        await trio.testing.wait_all_tasks_blocked()  # taken: the queue is empty
        with trio.move_on_after(1):
            await db.call(("sleep", 2))  # cancelled while the resource holds it
        assert await db.call(("sleep", 1.5)) == 1.5  # slow: one failure
        with pytest.raises(breaky.CallTimeout):
            await db.call(("sleep", 10), timeout=2)  # the second failure

        world.down = True  # a crash, then a failed restart: OFF
        with pytest.raises(breaky.ResourceLost):
            await db.call("lost")
        assert db.state is State.OFF
        assert await db.call("refused") is OFF

        world.down = False  # the retry succeeds
        await wait_for_state(db, State.ON)
        assert await db.call("back") == "back"
        db.failure()  # counted now: the failures gauge is above zero too
        nursery.start_soon(hold, db)  # the resource holds it
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(queue, db)  # it waits in the inbox: max_queued
        await trio.testing.wait_all_tasks_blocked()
        assert await db.call("shed") is OFF

        stats = db.statistics()
        assert stats.pending == 2
        # No fleet here, so no fleet hold; every other number is above zero.
        fields = ["failures", *OUTCOMES.values(), *COUNTERS]
        skip = {"fleet_holds", *GUARD_ONLY}
        assert all(getattr(stats, f) for f in fields if f not in skip)
        yield sup
