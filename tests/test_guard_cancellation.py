"""A guard's calls cancelled at random moments leave nothing behind.

Hypothesis draws a guard's policy (a bulkhead, trial calls, a timeout or not,
the count or the rate rule) and a crowd of calls: when each starts, how long
its function takes and how it ends, and when its caller gives up (a cancel
scope's deadline on the mock clock), while the whole crowd is cancelled at a
random moment too. Whatever was cancelled, and wherever (running, waiting for
a place, a trial, in the OFF answer's checkpoint), afterwards no permit, place
or count is left behind: nothing pending, statistics that add up, a trial
that runs once due, and every place of the bulkhead free again, as seen
through behaviour: ``max_concurrent`` calls run at once and ``max_queued``
more wait.
"""

from __future__ import annotations

import math
import os
import random

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import answered_calls

import breaky
from breaky import OFF, State


class Counted(LookupError):  # noqa: N818 - a dependency's answer, as tests name them
    pass


class NotCounted(ValueError):  # noqa: N818
    pass


@attrs.frozen
class Planned:
    """One call of the crowd."""

    start: float
    duration: float
    how: str
    cancel_after: float | None


EXAMPLES = {"default": 150, "long": 3000}[
    os.environ.get("HYPOTHESIS_PROFILE", "default")
]
# Times on a grid of quarter seconds, so that many things happen at once.
quarters = st.integers(0, 40).map(lambda n: n / 4)
calls = st.builds(
    Planned,
    start=quarters,
    duration=st.sampled_from([0.0, 0.25, 1.0, 3.0, math.inf]),
    how=st.sampled_from(["ok", "ok", "counted", "not counted"]),
    # 0: the caller is cancelled at once (in the OFF answer's checkpoint, say).
    cancel_after=st.none() | st.just(0.0) | st.integers(1, 16).map(lambda n: n / 4),
)


@st.composite
def policies(draw: st.DrawFn) -> breaky.Policy:
    rule = (
        {"failure_threshold": draw(st.integers(1, 3))}
        if draw(st.booleans())
        else {
            "failure_rate": draw(st.sampled_from([0.25, 0.5, 1.0])),
            "minimum_calls": draw(st.integers(1, 4)),
            "failure_window": 5.0,
        }
    )
    limit = draw(st.integers(1, 3))
    return breaky.Policy(
        retry_timeout=draw(st.sampled_from([0.5, 1.0, 2.0])),
        retry_backoff=draw(st.sampled_from([1.0, 2.0])),
        max_retry_timeout=4.0,
        retry_jitter=draw(st.sampled_from([0.0, 0.3])),
        rng=random.Random(draw(st.integers(0, 2**32))),
        call_timeout=draw(st.sampled_from([None, 0.5, 2.0])),
        trial_calls=draw(st.integers(1, 2)),
        max_concurrent=limit,
        max_queued=draw(st.sampled_from([None, 1, 3])),
        failure_exceptions=Counted,
        **rule,
    )


def assert_nothing_left(guard: breaky.Guard) -> None:
    stats = guard.statistics()
    assert stats.pending == 0, stats
    assert stats.calls == answered_calls(stats), stats


async def quick() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


async def trial_runs_once_due(guard: breaky.Guard) -> None:
    """Trip the guard if it is ON; once due, its trials run and turn it ON."""
    policy = guard.policy
    if guard.state is State.ON and policy.failure_window is not None:
        # Past the window, failure() alone makes every outcome a failure.
        await trio.sleep(policy.failure_window)
    for _ in range(100):
        if guard.state is State.OFF:
            break
        guard.failure()
    assert guard.state is State.OFF
    assert policy.max_retry_timeout is not None
    await trio.sleep(policy.max_retry_timeout * (1 + policy.retry_jitter))
    # As many trials as are still wanted (one may have passed in the crowd).
    trials = 0
    while guard.state is State.OFF:
        assert await guard.run(quick) == "ok"  # a trial, not OFF
        trials += 1
    assert 1 <= trials <= policy.trial_calls
    assert guard.state is State.ON


async def every_place_is_free(
    guard: breaky.Guard, clock: trio.testing.MockClock
) -> None:
    """``max_concurrent`` calls run at once, ``max_queued`` more wait, one is shed."""
    limit = guard.policy.max_concurrent
    queued = guard.policy.max_queued
    assert limit is not None
    release = trio.Event()
    running = 0
    most = 0

    async def hold() -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return "ok"

    answers: list[object] = []

    async def caller() -> None:
        answers.append(await guard.run(hold))

    # Time stands still: no waiting call reaches its timeout meanwhile.
    clock.autojump_threshold = math.inf
    before = guard.statistics()
    waiting = queued if queued is not None else 2
    async with trio.open_nursery() as nursery:
        for _ in range(limit + waiting):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert (running, guard.statistics().pending) == (limit, limit + waiting)
        if queued is not None:
            assert await guard.run(hold) is OFF
            assert guard.statistics().shed == before.shed + 1
        release.set()
    assert most == limit
    assert answers == ["ok"] * (limit + waiting)
    clock.autojump_threshold = 0


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
@given(
    policy=policies(),
    crowd=st.lists(calls, min_size=1, max_size=30),
    everyone_cancelled_at=quarters.map(lambda t: t + 2),
)
# 150 examples take about 2 s; the long profile's 3000, 20 times that.
@pytest.mark.timeout(60 * EXAMPLES // 150)
def test_cancelled_calls_and_trials_leave_nothing_behind(
    policy: breaky.Policy, crowd: list[Planned], everyone_cancelled_at: float
) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        guard = breaky.Guard("api", policy=policy)
        running = 0

        async def fn(planned: Planned) -> str:
            nonlocal running
            running += 1
            try:
                await trio.sleep(planned.duration)
            finally:
                running -= 1
            if planned.how == "counted":
                raise Counted
            if planned.how == "not counted":
                raise NotCounted
            return "ok"

        async def caller(planned: Planned) -> None:
            await trio.sleep(planned.start)
            limit = math.inf if planned.cancel_after is None else planned.cancel_after
            with trio.move_on_after(limit):
                try:
                    answer = await guard.run(fn, planned)
                except (Counted, NotCounted, breaky.CallTimeout):
                    return
                assert answer in ("ok", OFF)

        start = trio.current_time()
        with trio.move_on_at(start + everyone_cancelled_at):
            async with trio.open_nursery() as nursery:
                for planned in crowd:
                    nursery.start_soon(caller, planned)
        assert running == 0  # every function ended: none left running
        assert_nothing_left(guard)
        await trial_runs_once_due(guard)
        await every_place_is_free(guard, clock)
        assert_nothing_left(guard)

    trio.run(main, clock=clock)
