"""Chaos soak: many breakers with injected faults, many impatient callers.

Every call must get exactly one answer of an allowed kind; a request
answered OFF or withdrawn is never seen by a resource; no call outlives its
deadline; every breaker's statistics add up and agree with what the callers
saw; nothing is left running; memory does not grow from round to round.

The default run is small. ``BREAKY_SOAK=full`` (``nox -s soak``) runs 50
breakers and 200 callers for one simulated hour. The seed is printed;
``BREAKY_SOAK_SEED=N`` replays a run.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import math
import os
import random
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

import breaky
from breaky import OFF, Policy
from breaky.testing import Faults

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock as Clock

FULL = os.environ.get("BREAKY_SOAK") == "full"
BREAKERS, CALLERS, ROUNDS, ROUND_SECONDS = (
    (50, 200, 4, 900.0) if FULL else (8, 30, 3, 120.0)
)


@attrs.define
class Ledger:
    """What the resources saw and what the callers got."""

    seq: int = 0
    taken: dict[int, float] = attrs.Factory(dict)  # id -> when a resource took it
    answers: collections.Counter[str] = attrs.Factory(collections.Counter)
    calls: int = 0
    problems: list[str] = attrs.Factory(list)


def recording(ledger: Ledger, fn: Any) -> Any:
    """Wrap a resource so that every request it takes is written down."""

    async def recorded(
        inbox: breaky.Inbox[Any, Any], *args: Any, task_status: Any
    ) -> None:
        async def taken() -> AsyncIterator[breaky.Request[Any, Any]]:
            async for request in inbox:
                ledger.taken[request.message] = trio.current_time()
                yield request

        async with contextlib.aclosing(taken()) as requests:
            await fn(requests, *args, task_status=task_status)

    return recorded


async def echo(inbox: Any, *, task_status: Any) -> None:
    task_status.started()
    async for request in inbox:
        request.reply(request.message)


async def caller(
    ledger: Ledger,
    breakers: list[breaky.CircuitBreaker[int, int]],
    rng: random.Random,
    ids: collections.abc.Iterator[int],
    until: float,
) -> None:
    while trio.current_time() < until:
        db = rng.choice(breakers)
        message = next(ids)
        patience = rng.uniform(0.05, 6.0)  # the caller's own deadline
        timeout = rng.choice([None, 0.5, 2.0, 5.0, rng.uniform(0.1, 3.0)])
        start = trio.current_time()
        limit = start + min(patience, math.inf if timeout is None else timeout)
        ledger.calls += 1
        kind = "none"
        with trio.move_on_after(patience) as scope:
            try:
                answer = await db.call(message, timeout=timeout)
            except breaky.CallTimeout:
                kind = "timeout"
            except breaky.ResourceLost:
                kind = "lost"
            else:
                kind = "off" if answer is OFF else "reply"
                if kind == "reply" and answer != message:
                    ledger.problems.append(f"{message}: wrong reply {answer!r}")
        if scope.cancelled_caught:
            kind = "cancelled"
            if ledger.taken.get(message, -math.inf) >= start + patience:
                ledger.problems.append(f"{message}: taken after it was withdrawn")
        if kind == "off" and message in ledger.taken:
            ledger.problems.append(f"{message}: answered OFF but seen")
        if trio.current_time() > limit:
            ledger.problems.append(f"{message}: answered after its deadline")
        ledger.answers[kind] += 1
        await trio.sleep(rng.expovariate(1.0))


async def soak_round(
    seed: int, ledger: Ledger, injected: collections.Counter[str]
) -> None:
    rng = random.Random(seed)
    ids = iter(range(seed * 10**9, (seed + 1) * 10**9))
    root = trio.lowlevel.current_root_task()
    tasks_before = sum(len(n.child_tasks) for n in root.child_nurseries)
    faults = []
    answers_before = ledger.answers.copy()
    async with breaky.open_supervisor(shutdown_timeout=1) as sup:
        breakers = []
        for n in range(BREAKERS):
            fault = Faults(
                crash=rng.uniform(0, 0.02),
                hang=rng.uniform(0, 0.01),
                normal_return=rng.uniform(0, 0.005),
                slow_reply=rng.uniform(0, 0.1),
                fail_start=rng.uniform(0, 0.5),
                slow_start=rng.uniform(0, 0.3),
                delay=rng.uniform(0.01, 2.0),
                seed=rng.getrandbits(32),
            )
            faults.append(fault)
            policy = Policy(
                failure_threshold=rng.randint(1, 6),
                retry_timeout=rng.uniform(1, 30),
                retry_backoff=rng.choice([1.0, 1.5, 2.0]),
                max_retry_timeout=60,
                retry_jitter=0.1,
                rng=random.Random(rng.getrandbits(32)),
                call_timeout=rng.choice([None, 1.0, 5.0]),
            )
            breakers.append(
                await sup.start_circuit_breaker(
                    f"b{n}", recording(ledger, fault.wrap(echo)), policy=policy
                )
            )
        until = trio.current_time() + ROUND_SECONDS
        async with trio.open_nursery() as crowd:
            for _ in range(CALLERS):
                crowd.start_soon(
                    caller,
                    ledger,
                    breakers,
                    random.Random(rng.getrandbits(32)),
                    ids,
                    until,
                )
        # Every breaker's counts add up, and together they agree with what
        # the callers saw.
        totals: collections.Counter[str] = collections.Counter()
        for db in breakers:
            s = db.statistics()
            assert s.calls == (
                s.replies + s.errors + s.off + s.timeouts + s.lost + s.cancelled
            ), s
            assert s.pending == 0
            totals.update(
                reply=s.replies,
                off=s.off,
                timeout=s.timeouts,
                lost=s.lost,
                cancelled=s.cancelled,
            )
        assert +totals == ledger.answers - answers_before
    tasks_after = sum(len(n.child_tasks) for n in root.child_nurseries)
    assert tasks_after == tasks_before
    for db in breakers:
        assert db.state is breaky.State.STOPPED
    for fault in faults:
        injected.update(fault.injected)


# The full soak runs for minutes on the real clock.
@pytest.mark.timeout(1800 if FULL else 120)
async def test_chaos_soak(autojump_clock: Clock) -> None:
    seed = int(os.environ.get("BREAKY_SOAK_SEED", random.randrange(10**6)))
    print(f"soak seed: {seed} (replay with BREAKY_SOAK_SEED={seed})")  # noqa: T201
    ledger = Ledger()
    injected: collections.Counter[str] = collections.Counter()
    objects = []
    # Thousands of crashes are logged with their tracebacks; pytest would keep
    # every record, which is not breaky's memory to measure.
    logger = logging.getLogger("breaky")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        for n in range(ROUNDS):
            await soak_round(seed + n, ledger, injected)
            ledger.taken.clear()
            gc.collect()
            objects.append(len(gc.get_objects()))
    finally:
        logger.setLevel(level)
    assert ledger.problems == [], ledger.problems[:10]
    assert ledger.answers.total() == ledger.calls
    assert ledger.answers.keys() <= {"reply", "off", "timeout", "lost", "cancelled"}
    # Every kind of answer and of fault happened: the soak tested something.
    assert min(ledger.answers.values()) > 0, ledger.answers
    assert len(injected) == 6, injected
    # Memory does not grow from round to round (the first warms up caches).
    assert objects[-1] <= objects[1] * 1.05 + 1000, objects
    print(  # noqa: T201
        f"calls: {ledger.calls}, answers: {dict(ledger.answers)}, "
        f"faults injected: {dict(injected)}, objects by round: {objects}"
    )
