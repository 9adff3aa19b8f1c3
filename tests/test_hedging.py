"""Hedged calls: another attempt every hedge_after seconds, the first success wins.

On the mock clock. The losers are cancelled by the call's own nursery and
count ``cancelled`` only: no failure, no timeout, nothing left in flight.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from attempts_support import Down, NotFound, Script, adds_up, fail, hang, ok

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock

LEAN_AND_TIMED = pytest.mark.parametrize("call_timeout", [None, 30.0])


def hedging(**options: Any) -> breaky.Guard:
    options.setdefault("attempts", 3)
    options.setdefault("hedge_after", 1.0)
    options.setdefault("call_timeout", 30)
    options.setdefault("failure_threshold", 10)
    options.setdefault("rng", random.Random(2))
    return breaky.Guard("api", **options)


@LEAN_AND_TIMED
async def test_the_first_success_answers_and_the_others_count_nothing(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = hedging(call_timeout=call_timeout)
    script = Script([ok("slow", seconds=10), ok("fast", seconds=0.5)])
    start = trio.current_time()
    assert await api.run(script.fn) == "fast"
    assert trio.current_time() - start == pytest.approx(1.5)
    assert sorted(script.ended) == ["cancelled", "ok"]
    stats = api.statistics()
    assert (stats.calls, stats.replies, stats.cancelled) == (2, 1, 1)
    assert (stats.hedges, stats.reattempts, stats.failures) == (1, 0, 0)
    assert (stats.errors, stats.timeouts, stats.pending) == (0, 0, 0)
    assert api.in_flight == 0
    assert adds_up(stats)


async def test_an_answer_before_hedge_after_starts_no_hedge(
    autojump_clock: Clock,
) -> None:
    api = hedging()
    script = Script([ok(seconds=0.9)])
    assert await api.run(script.fn) == "ok"
    assert script.runs == 1
    assert api.statistics().hedges == 0


async def test_a_hedge_starts_every_hedge_after_up_to_attempts(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempts=3, hedge_after=1.0)
    script = Script([hang(), hang(), ok(seconds=5)])
    assert await api.run(script.fn) == "ok"
    assert script.started == pytest.approx([0, 1, 2], abs=1e-9)
    assert trio.current_time() == pytest.approx(7)
    stats = api.statistics()
    assert (stats.hedges, stats.cancelled, stats.replies) == (2, 2, 1)


async def test_a_failure_worth_another_while_others_run_does_not_end_the_call(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempts=3)
    script = Script([ok("first", seconds=5), fail(seconds=0.1), ok("third", seconds=9)])
    assert await api.run(script.fn) == "first"
    assert script.ended == ["Down", "ok", "cancelled"]
    stats = api.statistics()
    assert (stats.hedges, stats.errors, stats.replies, stats.cancelled) == (2, 1, 1, 1)


async def test_an_exception_not_worth_another_ends_the_call_at_once(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempt_on=Down)
    script = Script([hang(), fail(NotFound("gone"), seconds=0.5)])
    with pytest.raises(NotFound, match="gone"):
        await api.run(script.fn)
    assert trio.current_time() == pytest.approx(1.5)
    assert script.ended == ["NotFound", "cancelled"]
    assert api.in_flight == 0


@LEAN_AND_TIMED
async def test_when_every_attempt_fails_the_last_ended_answers(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = hedging(call_timeout=call_timeout)
    errors = [Down("a"), Down("b"), Down("c")]
    script = Script([fail(errors[0], 2.5), fail(errors[1], 0.2), fail(errors[2], 0.1)])
    with pytest.raises(Down) as caught:
        await api.run(script.fn)
    # a ends at 2.5, b at 1.2, c at 2.1: a ended last.
    assert caught.value is errors[0]
    assert api.statistics().hedges == 2


async def test_when_all_started_have_failed_the_next_waits_as_a_reattempt(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempts=3, attempt_wait=0.2, max_attempt_wait=0.2)
    script = Script([fail(seconds=0.5), hang(), ok(seconds=0.1)])
    assert await api.run(script.fn) == "ok"
    # Failed at 0.5 with nothing else running: a re-attempt after 0.1-0.2 s;
    # then hedging again, hedge_after later.
    assert 0.6 <= script.started[1] <= 0.7
    assert script.started[2] == pytest.approx(script.started[1] + 1)
    stats = api.statistics()
    assert (stats.reattempts, stats.hedges) == (1, 1)


async def test_each_attempt_has_its_own_timeout_when_hedged(
    autojump_clock: Clock,
) -> None:
    api = hedging(call_timeout=2, attempts=2)
    script = Script([hang(), ok(seconds=1.5)])
    # The first times out at 2 (worth another) while the hedge runs on.
    assert await api.run(script.fn) == "ok"
    stats = api.statistics()
    assert (stats.timeouts, stats.replies, stats.hedges) == (1, 1, 1)
    assert trio.current_time() == pytest.approx(2.5)


async def test_no_hedge_while_the_guard_is_not_on(autojump_clock: Clock) -> None:
    api = hedging()
    script = Script([ok("first", seconds=3)])
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            assert await api.run(script.fn) == "first"

        nursery.start_soon(call)
        await trio.sleep(0.5)
        api.force_off()
    assert script.runs == 1
    stats = api.statistics()
    assert (stats.hedges, stats.attempts_denied) == (0, 1)  # one, then no more


async def test_a_trial_is_never_hedged(autojump_clock: Clock) -> None:
    api = hedging(failure_threshold=1, retry_timeout=5)
    with pytest.raises(Down):
        await api.run(Script([fail()]).fn)
    await trio.sleep(5)
    script = Script([ok("trial", seconds=3)])
    assert await api.run(script.fn) == "trial"
    assert script.runs == 1
    assert api.state is State.ON


async def test_a_hedge_beyond_the_budget_is_denied(autojump_clock: Clock) -> None:
    api = hedging(attempt_budget=0, attempt_budget_min=0)
    script = Script([ok(seconds=2.5)])
    assert await api.run(script.fn) == "ok"
    assert script.runs == 1
    stats = api.statistics()
    assert (stats.hedges, stats.attempts_denied) == (0, 1)


async def test_a_reattempt_past_the_callers_deadline_is_denied(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempt_wait=1, max_attempt_wait=1)
    script = Script([fail(Down("only"), seconds=0.5)])
    with trio.move_on_after(0.9), pytest.raises(Down, match="only"):
        await api.run(script.fn)
    assert trio.current_time() == pytest.approx(0.5)
    assert api.statistics().attempts_denied == 1


async def test_the_guard_turning_off_during_a_reattempt_wait_ends_the_call(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempt_wait=1, max_attempt_wait=1)
    script = Script([fail(Down("only"), seconds=0.5)])
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            with pytest.raises(Down, match="only"):
                await api.run(script.fn)

        nursery.start_soon(call)
        await trio.sleep(0.6)
        api.force_off()
    assert script.runs == 1
    assert api.statistics().attempts_denied == 1


async def test_the_callers_cancellation_cancels_every_attempt(
    autojump_clock: Clock,
) -> None:
    api = hedging(max_concurrent=5, call_timeout=30)
    script = Script([hang()])
    with trio.move_on_after(2.5):
        await api.run(script.fn)
    assert script.ended == ["cancelled"] * 3
    stats = api.statistics()
    assert (stats.cancelled, stats.failures, stats.errors, stats.timeouts) == (
        3,
        0,
        0,
        0,
    )
    assert api.in_flight == 0
    # Every place was given back: five calls run at once again.
    again = Script([hang()])
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(api.run, again.fn)
        await trio.testing.wait_all_tasks_blocked()
        assert again.runs == 5
        nursery.cancel_scope.cancel()


async def test_shed_first_attempt_answers_off(autojump_clock: Clock) -> None:
    api = hedging(max_concurrent=1, max_queued=1, call_timeout=30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, Script([hang()]).fn)
        nursery.start_soon(api.run, Script([hang()]).fn)  # in line
        await trio.testing.wait_all_tasks_blocked()
        script = Script([ok()])
        assert await api.run(script.fn) is OFF
        with pytest.raises(breaky.BreakerOff) as caught:
            await api.raising.run(script.fn)
        assert caught.value.shed
        assert script.runs == 0
        nursery.cancel_scope.cancel()


async def test_a_wrong_call_ends_a_hedged_call(autojump_clock: Clock) -> None:
    api = hedging()

    async def takes_none() -> None:
        pass

    with pytest.raises(TypeError):
        await api.run(takes_none, 1)  # type: ignore[arg-type]
    assert api.statistics().errors == 1


async def test_a_success_after_the_call_ended_changes_nothing(
    autojump_clock: Clock,
) -> None:
    # Two attempts end in the same step: the first to report answers.
    api = hedging(attempts=2, hedge_after=1.0)
    script = Script([ok("a", seconds=2), ok("b", seconds=1)])
    assert await api.run(script.fn) in {"a", "b"}
    stats = api.statistics()
    assert stats.replies + stats.cancelled == 2
    assert api.in_flight == 0


async def test_a_loser_that_fails_or_returns_when_cancelled_changes_nothing(
    autojump_clock: Clock,
) -> None:
    # Losers that turn their cancellation into an error or a value (not a
    # thing to do) still leave the winner's answer alone.
    api = hedging(attempts=3, hedge_after=1.0)
    runs = []

    async def stubborn(late: object) -> object:
        runs.append(late)
        if len(runs) == 3:
            return "winner"
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            if isinstance(late, Exception):
                raise late from None
            return late
        raise AssertionError  # pragma: no cover - never woken otherwise

    lates: list[object] = [Down("late"), "late", None]
    assert await api.run(lambda: stubborn(lates[len(runs)])) == "winner"
    stats = api.statistics()
    assert (stats.replies, stats.errors) == (2, 1)  # counted by the guard
    assert api.in_flight == 0


async def test_a_failure_after_the_call_ended_changes_nothing(
    autojump_clock: Clock,
) -> None:
    api = hedging(attempts=2, hedge_after=1.0)
    script = Script([fail(seconds=2), ok("b", seconds=1)])
    assert await api.run(script.fn) == "b"
    stats = api.statistics()
    assert stats.replies == 1
    assert stats.errors + stats.cancelled == 1


async def test_a_hedge_shed_while_its_first_attempt_runs_waits_for_it(
    autojump_clock: Clock,
) -> None:
    api = breaky.Guard(
        "h",
        attempts=2,
        hedge_after=1,
        max_concurrent=1,
        max_queued=1,
        call_timeout=None,
        rng=random.Random(1),
    )

    async def slow(value: str) -> str:
        await trio.sleep(10)
        return value

    answers: list[object] = []

    async def call(value: str) -> None:
        answers.append(await api.run(slow, value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "first")  # holds the one place
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "second")  # fills the line
        await trio.testing.wait_all_tasks_blocked()
    # The first call's hedge was shed (the line was full) while its first
    # attempt ran: the call waited for that attempt and got its answer.
    assert answers[0] == "first"
    assert api.statistics().shed >= 1
