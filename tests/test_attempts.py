"""Re-attempts: one call, several attempts through the guard, on the mock clock.

The rules of issue 23, one by one: one answer per call; each attempt a call
through the guard; none while the guard is not ON; the caller's deadline
rules; the caller's cancellation; the counters; every form.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from attempts_support import Down, NotFound, Script, adds_up, fail, hang, ok

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.testing import MockClock as Clock

# A call's forms, each run through a guard with the test's options: the
# guard's lean path (no timeout) and its timed path, for every rule.
LEAN_AND_TIMED = pytest.mark.parametrize("call_timeout", [None, 5.0])


def guard(**options: Any) -> breaky.Guard:
    options.setdefault("attempts", 3)
    options.setdefault("failure_threshold", 10)
    options.setdefault("retry_timeout", 10)
    options.setdefault("rng", random.Random(1))
    return breaky.Guard("api", **options)


# 1. One answer per call.


@LEAN_AND_TIMED
async def test_a_failed_attempt_is_made_again_and_its_success_answers(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = guard(call_timeout=call_timeout)
    script = Script([fail(), fail(), ok("third")])
    assert await api.run(script.fn) == "third"
    stats = api.statistics()
    assert script.runs == 3
    assert (stats.calls, stats.errors, stats.replies) == (3, 2, 1)
    assert (stats.reattempts, stats.hedges, stats.attempts_denied) == (2, 0, 0)
    assert stats.failures == 0  # two counted, then reset by the success (in a row)
    assert stats.last_failure_at is not None
    assert adds_up(stats)
    assert api.in_flight == 0


@LEAN_AND_TIMED
async def test_a_first_attempt_that_succeeds_is_counted_once(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = guard(call_timeout=call_timeout)
    assert await api.run(Script([ok("first")]).fn) == "first"
    stats = api.statistics()
    assert (stats.calls, stats.replies, stats.pending, stats.reattempts) == (1, 1, 0, 0)


@LEAN_AND_TIMED
async def test_when_every_attempt_fails_the_last_exception_answers(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = guard(call_timeout=call_timeout)
    errors = [Down("first"), Down("second"), Down("third")]
    script = Script([fail(e) for e in errors])
    with pytest.raises(Down) as caught:
        await api.run(script.fn)
    assert caught.value is errors[2]
    assert api.statistics().reattempts == 2


async def test_attempts_is_the_most_runs_of_fn(autojump_clock: Clock) -> None:
    api = guard(attempts=2)
    script = Script([fail()])
    with pytest.raises(Down):
        await api.run(script.fn)
    assert script.runs == 2


async def test_off_only_when_fn_never_ran(autojump_clock: Clock) -> None:
    api = guard()
    api.force_off()
    script = Script([ok()])
    assert await api.run(script.fn) is OFF
    with pytest.raises(breaky.BreakerOff):
        await api.raising.run(script.fn)
    assert await api(script.fn)() is OFF
    assert script.runs == 0
    stats = api.statistics()
    assert (stats.off, stats.reattempts, stats.attempts_denied) == (3, 0, 0)


async def test_a_shed_reattempt_leaves_the_last_exception_as_the_answer(
    autojump_clock: Clock,
) -> None:
    # One place, and no line: the re-attempt finds the place taken and is
    # shed; the call answers with its first attempt's exception, not OFF.
    api = guard(max_concurrent=1, max_queued=1, call_timeout=5, attempts=2)
    holder = Script([hang()])
    waiting = Script([hang()])
    script = Script([fail(Down("first"))])
    async with trio.open_nursery() as nursery:
        first = trio.Event()

        async def make_first() -> None:
            with pytest.raises(Down, match="first"):
                await api.run(script.fn)
            first.set()

        nursery.start_soon(make_first)
        await trio.testing.wait_all_tasks_blocked()  # its wait before again
        nursery.start_soon(api.run, holder.fn)
        nursery.start_soon(api.run, waiting.fn)  # in line: the line is full
        await first.wait()
        nursery.cancel_scope.cancel()
    stats = api.statistics()
    assert script.runs == 1
    assert (stats.reattempts, stats.shed) == (1, 1)


async def test_fn_returning_off_is_a_success_not_a_refusal(
    autojump_clock: Clock,
) -> None:
    api = guard(call_timeout=5)
    inner = guard()
    inner.force_off()

    async def nested() -> object:
        return await inner.run(Script([ok()]).fn)

    assert await api.run(nested) is OFF
    assert await api.raising.run(nested) is OFF
    assert api.statistics().replies == 2


async def test_a_wrong_call_is_not_made_again(autojump_clock: Clock) -> None:
    api = guard(call_timeout=5)

    async def takes_none() -> None:
        pass

    for form in (api.run, api.raising.run):
        with pytest.raises(TypeError):
            await form(takes_none, 1)  # type: ignore[arg-type]
    lean = guard(call_timeout=None)
    with pytest.raises(TypeError):
        await lean.run(takes_none, 1)  # type: ignore[arg-type]
    for stats in (api.statistics(), lean.statistics()):
        assert (stats.errors, stats.reattempts, stats.failures) == (stats.calls, 0, 0)


@LEAN_AND_TIMED
async def test_a_reattempt_that_is_a_wrong_call_ends_the_call(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    class OnceOnly:
        """Callable once; the next call raises before any run."""

        def __init__(self) -> None:
            self.called = False

        def __call__(self) -> Any:
            if self.called:
                msg = "called twice"
                raise ValueError(msg)
            self.called = True
            return Script([fail()]).fn()

    api = guard(call_timeout=call_timeout)
    with pytest.raises(ValueError, match="called twice"):
        await api.run(OnceOnly())
    stats = api.statistics()
    assert (stats.calls, stats.errors, stats.reattempts) == (2, 2, 1)


# 2. Each attempt is a call through the guard.


async def test_each_attempts_failure_counts_toward_the_breaker(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_threshold=2)
    script = Script([fail(Down("1")), fail(Down("2"))])
    with pytest.raises(Down, match="2"):
        await api.run(script.fn)
    assert api.state is State.OFF
    stats = api.statistics()
    # The second failure tripped it: the third attempt is denied (rule 3).
    assert (stats.trips, stats.reattempts, stats.attempts_denied) == (1, 1, 1)
    assert script.runs == 2


async def test_each_attempt_has_its_own_call_timeout(autojump_clock: Clock) -> None:
    api = guard(call_timeout=2, attempt_wait=0.1)
    script = Script([hang(), ok("second")])
    start = trio.current_time()
    assert await api.run(script.fn) == "second"
    stats = api.statistics()
    assert (stats.timeouts, stats.replies, stats.reattempts) == (1, 1, 1)
    # The first attempt's whole timeout, then a wait of 0.05 to 0.1 s.
    assert 2.05 <= trio.current_time() - start <= 2.1
    assert script.started[1] - script.started[0] == trio.current_time() - start


async def test_an_explicit_timeout_bounds_each_attempt(autojump_clock: Clock) -> None:
    api = guard(call_timeout=None)
    script = Script([hang(), hang(), ok()])
    assert await api.run(script.fn, timeout=1) == "ok"
    assert api.statistics().timeouts == 2


async def test_each_attempt_holds_a_bulkhead_place(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, call_timeout=5)
    script = Script([fail(seconds=1), ok(seconds=1)])
    other = Script([ok(seconds=0.5)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, script.fn)
        await trio.sleep(1.01)  # the first attempt failed; it waits to go again
        assert api.in_flight == 0
        nursery.start_soon(api.run, other.fn)  # takes the free place
        await trio.sleep(0.2)
        # The re-attempt waits in line for the place the other call holds.
        assert script.runs == 1
        assert api.in_flight == 2
    assert script.runs == 2
    assert script.started[1] == pytest.approx(other.started[0] + 0.5)


# 3. No attempt while not ON.


async def test_no_reattempt_once_the_guard_turned_off_while_it_waited(
    autojump_clock: Clock,
) -> None:
    api = guard(attempt_wait=1, max_attempt_wait=1)
    script = Script([fail(Down("only"))])
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            with pytest.raises(Down, match="only"):
                await api.run(script.fn)

        nursery.start_soon(call)
        await trio.sleep(0.1)
        api.force_off()
    assert script.runs == 1
    stats = api.statistics()
    assert (stats.reattempts, stats.attempts_denied) == (0, 1)


async def test_a_failed_trial_is_not_made_again(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1, retry_timeout=5)
    script = Script([fail(Down("trip")), fail(Down("trial"))])
    with pytest.raises(Down, match="trip"):
        await api.run(script.fn)
    await trio.sleep(5)
    with pytest.raises(Down, match="trial"):
        await api.run(script.fn)
    stats = api.statistics()
    assert script.runs == 2
    assert (stats.retries, stats.reattempts, stats.attempts_denied) == (1, 0, 2)
    assert api.state is State.OFF


async def test_a_trial_that_succeeds_answers(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1, retry_timeout=5, call_timeout=5)
    script = Script([fail(), ok("back")])
    with pytest.raises(Down):
        await api.run(script.fn)
    await trio.sleep(5)
    assert await api.run(script.fn) == "back"
    assert api.state is State.ON


# 4. The caller's deadline rules.


@LEAN_AND_TIMED
async def test_no_wait_starts_that_would_end_after_the_callers_deadline(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = guard(call_timeout=call_timeout, attempt_wait=1, max_attempt_wait=1)
    script = Script([fail(Down("first"), seconds=0.2)])
    start = trio.current_time()
    with trio.move_on_after(0.5), pytest.raises(Down, match="first"):
        await api.run(script.fn)
    assert trio.current_time() - start == pytest.approx(0.2)  # at once
    stats = api.statistics()
    assert (stats.attempts_denied, stats.reattempts, stats.cancelled) == (1, 0, 0)


async def test_a_wait_that_ends_before_the_deadline_is_made(
    autojump_clock: Clock,
) -> None:
    api = guard(attempt_wait=1, max_attempt_wait=1)
    script = Script([fail(), ok()])
    with trio.move_on_after(1.5):
        assert await api.run(script.fn) == "ok"
    assert api.statistics().reattempts == 1


# The waits.


async def test_the_wait_doubles_for_each_attempt_up_to_its_cap(
    autojump_clock: Clock,
) -> None:
    api = guard(attempts=6, attempt_wait=0.1, max_attempt_wait=0.4)
    script = Script([fail()])
    with pytest.raises(Down):
        await api.run(script.fn)
    ceilings = [0.1, 0.2, 0.4, 0.4, 0.4]
    for gap, ceiling in zip(script.gaps(), ceilings, strict=True):
        assert ceiling / 2 <= gap <= ceiling


async def test_the_waits_are_drawn_from_the_policys_rng(
    autojump_clock: Clock,
) -> None:
    gaps = []
    for _ in range(2):
        api = guard(rng=random.Random(7))
        script = Script([fail()])
        with pytest.raises(Down):
            await api.run(script.fn)
        gaps.append(script.gaps())
    assert gaps[0] == pytest.approx(gaps[1])
    assert gaps[0][0] != gaps[0][1] / 2  # drawn, not fixed


async def test_a_zero_wait_makes_the_next_attempt_at_once(
    autojump_clock: Clock,
) -> None:
    api = guard(attempt_wait=0, max_attempt_wait=0)
    script = Script([fail(), ok()])
    assert await api.run(script.fn) == "ok"
    assert script.gaps() == [0]


# attempt_on.


@pytest.mark.parametrize(
    "attempt_on",
    [Down, (KeyError, Down), lambda error: isinstance(error, Down)],
    ids=["type", "tuple", "predicate"],
)
async def test_attempt_on_says_which_exceptions_are_worth_another(
    autojump_clock: Clock, attempt_on: object
) -> None:
    api = guard(attempt_on=attempt_on, call_timeout=5)
    script = Script([fail(Down()), ok()])
    assert await api.run(script.fn) == "ok"
    other = Script([fail(NotFound())])
    with pytest.raises(NotFound):
        await api.run(other.fn)
    assert other.runs == 1


async def test_by_default_the_failures_and_timeouts_are_worth_another(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_exceptions=Down, call_timeout=1)
    assert await api.run(Script([fail(), ok()]).fn) == "ok"
    assert await api.run(Script([hang(), ok()]).fn) == "ok"
    not_a_failure = Script([fail(NotFound()), ok()])
    with pytest.raises(NotFound):
        await api.run(not_a_failure.fn)
    assert not_a_failure.runs == 1


async def test_a_timeout_is_worth_another_only_if_attempt_on_says_so(
    autojump_clock: Clock,
) -> None:
    api = guard(attempt_on=Down, call_timeout=1)
    script = Script([hang(), ok()])
    with pytest.raises(breaky.CallTimeout):
        await api.run(script.fn)
    assert script.runs == 1
    api = guard(attempt_on=(Down, breaky.CallTimeout), call_timeout=1)
    assert await api.run(Script([hang(), ok()]).fn) == "ok"


@LEAN_AND_TIMED
async def test_a_raising_attempt_on_leaves_nothing_behind(
    autojump_clock: Clock,
    call_timeout: float | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(error: Exception) -> bool:
        msg = f"cannot judge {error!r}"
        raise RuntimeError(msg)

    api = guard(attempt_on=broken, call_timeout=call_timeout)
    script = Script([fail(Down("own"))])
    with (
        caplog.at_level(logging.ERROR, logger="breaky"),
        pytest.raises(Down, match="own") as caught,
    ):
        await api.run(script.fn)
    assert script.runs == 1
    stats = api.statistics()
    assert (stats.errors, stats.failures, stats.reattempts) == (1, 1, 0)
    assert (stats.attempts_denied, stats.pending) == (0, 0)
    assert adds_up(stats)
    (record,) = [r for r in caplog.records if r.name == "breaky"]
    assert record.getMessage() == (
        "guard 'api': its attempt_on raised on Down: own; no other attempt is made"
    )
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert record.error is caught.value  # type: ignore[attr-defined]


# 6. The caller's cancellation.


@LEAN_AND_TIMED
async def test_cancelling_the_caller_during_the_first_attempt(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = guard(call_timeout=call_timeout)
    script = Script([hang()])
    with trio.move_on_after(1):
        await api.run(script.fn)
    stats = api.statistics()
    assert (stats.calls, stats.cancelled, stats.failures, stats.reattempts) == (
        1,
        1,
        0,
        0,
    )
    assert api.in_flight == 0


@LEAN_AND_TIMED
async def test_cancelling_the_caller_during_an_attempt_counts_no_failure(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = guard(call_timeout=call_timeout)
    script = Script([fail(), hang()])
    with trio.move_on_after(1):
        await api.run(script.fn)
    stats = api.statistics()
    assert script.ended == ["Down", "cancelled"]
    assert (stats.errors, stats.cancelled, stats.failures) == (1, 1, 1)
    assert api.in_flight == 0
    assert adds_up(stats)


async def test_cancelling_the_caller_during_a_wait_leaves_nothing(
    autojump_clock: Clock,
) -> None:
    api = guard(attempt_wait=1, max_attempt_wait=1, max_concurrent=1)
    script = Script([fail(), ok()])
    async with trio.open_nursery() as nursery:
        # Cancelled by another task: no deadline, so the wait begins.
        nursery.start_soon(api.run, script.fn)
        await trio.sleep(0.4)
        assert api.statistics().errors == 1
        nursery.cancel_scope.cancel()
    assert script.runs == 1
    assert api.in_flight == 0
    assert await api.run(Script([ok("free")]).fn) == "free"  # the place is free
    assert api.statistics().cancelled == 0


async def test_a_cancelled_trial_frees_its_place(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1, retry_timeout=5)
    with pytest.raises(Down):
        await api.run(Script([fail()]).fn)
    await trio.sleep(5)
    with trio.move_on_after(1):
        await api.run(Script([hang()]).fn)
    # The next call is the trial: the cancelled one left no trial behind.
    assert await api.run(Script([ok("trial")]).fn) == "trial"
    assert api.state is State.ON


# 8. Every form honours them.


async def test_every_form_makes_the_attempts(autojump_clock: Clock) -> None:
    api = guard(call_timeout=5)

    async def keyword(*, script: Script) -> object:
        return await script.fn()

    forms: list[Callable[[Script], Any]] = [
        lambda s: api.run(s.fn),
        lambda s: api(s.fn)(),
        lambda s: api(keyword)(script=s),
        lambda s: api.raising.run(s.fn),
        lambda s: api.raising(s.fn)(),
        lambda s: api.raising(keyword)(script=s),
        lambda s: api.run(s.fn, timeout=1),
    ]
    for form in forms:
        script = Script([fail(), ok("again")])
        assert await form(script) == "again"
        assert script.runs == 2
    assert api.statistics().reattempts == len(forms)


async def test_a_keyed_guards_run_makes_the_attempts(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("hosts", attempts=2, call_timeout=None)
        script = Script([fail(), ok("again")])
        assert await hosts.run("a", script.fn) == "again"
        assert hosts["a"].statistics().reattempts == 1
        stats = hosts.statistics()
        assert (stats.reattempts, stats.calls) == (1, 2)


async def test_a_supervisors_guard_takes_the_options(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        api = sup.guard("api", attempts=2, attempt_wait=0.5, max_attempt_wait=0.5)
        assert api.policy.attempts == 2
        script = Script([fail(), ok()])
        assert await api.run(script.fn) == "ok"
        assert 0.25 <= script.gaps()[0] <= 0.5


# 7. The counters, in the exporters too.


async def test_one_attempt_is_as_before(autojump_clock: Clock) -> None:
    api = guard(attempts=1)
    script = Script([fail()])
    with pytest.raises(Down):
        await api.run(script.fn)
    stats = api.statistics()
    assert (stats.reattempts, stats.hedges, stats.attempts_denied) == (0, 0, 0)


async def test_statistics_read_the_callers_calls(autojump_clock: Clock) -> None:
    api = guard()
    for steps in ([ok()], [fail(), ok()], [fail(), fail(), fail()]):
        with pytest.raises(Down) if len(steps) == 3 else _nothing():
            await api.run(Script(steps).fn)
    stats = api.statistics()
    assert stats.calls - stats.reattempts - stats.hedges == 3


class _nothing:  # noqa: N801 - a context manager's name reads as a word
    def __enter__(self) -> None:
        pass

    def __exit__(self, *_: object) -> None:
        pass


async def test_calls_after_many_failures_are_bounded_by_the_budget(
    autojump_clock: Clock,
) -> None:
    # Every call fails and the guard never trips: 100 calls in under 10 s
    # make at most 0.2 * 100 + 1.0 * 10 extra attempts.
    api = guard(failure_threshold=10**6, attempt_wait=0.01, max_attempt_wait=0.01)
    script = Script([fail()])
    for _ in range(100):
        with pytest.raises(Down):
            await api.run(script.fn)
    stats = api.statistics()
    assert trio.current_time() < 10
    assert stats.reattempts <= 0.2 * 100 + 10
    assert stats.reattempts >= 0.2 * 100  # the calls' share was spent
    assert stats.reattempts + stats.attempts_denied >= 100
    assert script.runs == 100 + stats.reattempts


@pytest.mark.parametrize("budget", [0.0, 0.5])
async def test_no_budget_and_no_floor_makes_no_extra_attempt(
    autojump_clock: Clock, budget: float
) -> None:
    api = guard(attempt_budget=budget, attempt_budget_min=0)
    script = Script([fail()])
    with pytest.raises(Down):
        await api.run(script.fn)  # the budget's first look places no call
    assert script.runs == 1
    assert api.statistics().attempts_denied == 1


def test_the_wait_is_never_more_than_the_cap() -> None:
    policy = breaky.Policy(attempts=40, attempt_wait=0.5, max_attempt_wait=2)
    from breaky._guard.attempts import Rules  # noqa: PLC0415 - the one unit

    rules = Rules(policy)
    waits = [rules.wait(n) for n in range(1, 40)]
    assert max(waits) <= 2
    assert all(math.isfinite(w) for w in waits)
    assert functools.reduce(min, waits) >= 0.25
