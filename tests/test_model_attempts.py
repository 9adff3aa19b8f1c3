"""The guard with attempts against the guard's model, extended (fuse-style).

``test_model_guard.py``'s model of a guard sees each *attempt* as a call
through the guard (admitted, counted, judged, holding a place, timed out on
its own). This test adds the *callers* above it: each caller's call makes a
first attempt, re-attempts after failures worth another (after a wait drawn
from the policy's random source), hedges every ``hedge_after`` while its
attempts run, and spends the attempt budget, which the model keeps in its
own words. Every attempt's function waits for the test to say how it ends;
time moves only in ``advance``. After every step the guard's state, its
places, its counters (the new ones included) and every caller's answer must
be the model's.

Calls are made at distinct moments (each ``call`` step moves the clock a
hundredth of a second first), so that no two callers decide at once: which
of two simultaneous callers draws which wait is the scheduler's, not the
policy's.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from test_model_guard import Call, Counted, Model, NotCounted

import breaky
from breaky import OFF, Policy, State
from breaky.testing import internals

POLICIES: dict[str, Policy] = {
    "re-attempts, bulkhead, budget, jitter": Policy(
        failure_threshold=3,
        retry_timeout=10,
        retry_jitter=0.2,
        call_timeout=3,
        failure_exceptions=Counted,
        max_concurrent=2,
        max_queued=1,
        attempts=3,
        attempt_wait=0.5,
        max_attempt_wait=1.5,
        attempt_budget=0.25,
        attempt_budget_min=0.15,
    ),
    "hedges, two trials, budget": Policy(
        failure_threshold=2,
        retry_timeout=5,
        call_timeout=4,
        failure_exceptions=Counted,
        trial_calls=2,
        max_concurrent=3,
        attempts=3,
        hedge_after=1.3,
        attempt_wait=0.3,
        max_attempt_wait=0.3,
        attempt_budget=0.5,
        attempt_budget_min=0.2,
    ),
    "lean re-attempts: no timeout, attempt_on a predicate": Policy(
        failure_threshold=3,
        retry_timeout=5,
        call_timeout=None,
        attempts=2,
        attempt_wait=2,
        max_attempt_wait=2,
        attempt_on=lambda error: isinstance(error, Counted),
        attempt_budget=0.1,
        attempt_budget_min=0.3,
    ),
}
EXAMPLES = {"default": 60, "long": 2000}[
    os.environ.get("HYPOTHESIS_PROFILE", "default")
]
# The budget's window, slices and extra slice for extra attempts, as its docs say.
WINDOW, WIDTH = 10.0, 0.5


def slice_of(t: float) -> int:
    return math.floor(t / WIDTH)


@attrs.define
class BudgetModel:
    """The budget in its docs' words: calls are placed at the look before them."""

    share: float
    floor: float
    unplaced: int = 0
    last_look: float | None = None
    placed: list[tuple[float, int]] = attrs.Factory(list)
    extras: list[float] = attrs.Factory(list)

    def withdraw(self, now: float) -> bool:
        if self.last_look is None or now < self.last_look:
            self.placed, self.extras = [], []
        else:
            self.placed.append((self.last_look, self.unplaced))
        self.unplaced, self.last_look = 0, now
        here = slice_of(now)
        calls = sum(n for t, n in self.placed if slice_of(t) > here - 20)
        extras = [t for t in self.extras if slice_of(t) > here - 21]
        if len(extras) + 1 > self.share * calls + self.floor:
            return False
        self.extras.append(now)
        return True


@attrs.define(eq=False)
class Caller:
    """One caller's call, as the model sees it."""

    number: int
    via: str
    hedged: bool
    attempts: list[Call] = attrs.Factory(list)
    # The attempts whose function was called, in that order (the real
    # runs, in the same order), and those whose end the caller has seen.
    ran: list[Call] = attrs.Factory(list)
    seen: set[int] = attrs.Factory(set)
    error: object = None  # the type of the last failed attempt's exception
    refusal: object = None  # the answer of a refused attempt, if any
    waiting_until: float | None = None  # a re-attempt's wait
    hedge_at: float = math.inf
    answer: object = None
    done: bool = False

    def unseen(self) -> list[Call]:
        """Its attempts still running, as the caller counts them."""
        return [a for a in self.attempts if a.number not in self.seen]


@attrs.define
class AttemptsModel(Model):
    """The guard's model, with callers making attempts through it."""

    budget: BudgetModel = attrs.field(init=False)
    callers: list[Caller] = attrs.Factory(list)
    attempt_numbers: int = 0

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        policy = self.policy
        self.budget = BudgetModel(
            policy.attempt_budget, policy.attempt_budget_min * WINDOW
        )
        for name in ("reattempts", "hedges", "attempts_denied"):
            self.totals[name] = 0

    def worth(self, error: object) -> bool:
        if error is breaky.CallTimeout:
            return self.policy.attempt_on is None
        if self.policy.attempt_on is not None:
            return error is Counted
        return isinstance(error, type) and issubclass(error, self.counts)

    def attempt_wait(self, started: int) -> float:
        policy = self.policy
        ceiling = min(
            policy.attempt_wait * 2.0 ** (started - 1), policy.max_attempt_wait
        )
        return ceiling * (0.5 + 0.5 * self.rng.random())

    # Callers.

    def make(self, number: int, via: str, *, cancelled: bool) -> Caller:
        on = self.state is State.ON
        caller = Caller(number, via, hedged=on and self.policy.hedge_after is not None)
        self.callers.append(caller)
        if on:
            self.budget.unplaced += 1
        self.start(caller, cancelled=cancelled)
        if cancelled:
            self.end(caller, "cancelled")
        self.settle()
        return caller

    def start(self, caller: Caller, *, cancelled: bool = False) -> None:
        attempt = self.call(self.attempt_numbers, "raising", cancelled=cancelled)
        self.attempt_numbers += 1
        caller.attempts.append(attempt)
        # Its function was called if it was let through (even if cancelled):
        # then the guard's model noted when (the clock is past 0 by then).
        if not attempt.waited and attempt.ran_at == self.now:
            caller.ran.append(attempt)
        caller.waiting_until = None
        hedge_after = self.policy.hedge_after
        if caller.hedged and len(caller.attempts) < self.policy.attempts:
            assert hedge_after is not None
            caller.hedge_at = self.now + hedge_after
        else:
            caller.hedge_at = math.inf

    def notice_runs(self) -> None:
        """Attempts handed a place since: their functions are called now."""
        for caller in self.callers:
            for attempt in caller.attempts:
                if attempt.phase == "running" and attempt not in caller.ran:
                    caller.ran.append(attempt)

    def end(self, caller: Caller, answer: object) -> None:
        caller.done, caller.answer = True, answer
        caller.hedge_at, caller.waiting_until = math.inf, None
        # The losers are cancelled: those in line leave it before any
        # running one gives its place back (Trio aborts them at once).
        losers = [a for a in caller.attempts if a.phase != "done"]
        for attempt in sorted(losers, key=lambda a: a.phase != "waiting"):
            self.cancel(attempt)
        caller.seen.update(a.number for a in caller.attempts)

    def settle(self, first: Call | None = None) -> None:
        """Take into account every attempt that ended, ``first`` first.

        ``first`` is the attempt whose end made others end (a failure that
        tripped the guard turns its line away): its caller hears of it first.
        """
        self.notice_runs()
        order = [c for c in self.callers if first in c.attempts] if first else []
        for caller in order + [c for c in self.callers if c not in order]:
            ended = [a for a in caller.unseen() if a.phase == "done"]
            if first in ended:
                ended.remove(first)
                ended.insert(0, first)
            for attempt in ended:
                if caller.done:
                    break
                caller.seen.add(attempt.number)
                self.attempt_ended(caller, attempt.answer)
        self.notice_runs()

    def attempt_ended(self, caller: Caller, answer: object) -> None:
        """One of ``caller``'s attempts ended with ``answer``."""
        if answer == "ok":
            self.end(caller, "ok")
            return
        if isinstance(answer, tuple):  # refused: ("BreakerOff", shed)
            caller.refusal = answer if caller.via == "raising" else OFF
            if not caller.unseen():
                self.end(caller, caller.error or caller.refusal)
            return
        if not self.worth(answer):
            self.end(caller, answer)
            return
        caller.error = answer
        if caller.unseen():
            return
        if len(caller.attempts) >= self.policy.attempts:
            self.end(caller, answer)
            return
        wait = self.attempt_wait(len(caller.attempts))
        if self.state is not State.ON or not self.budget.withdraw(self.now):
            self.totals["attempts_denied"] += 1
            self.end(caller, answer)
            return
        caller.waiting_until, caller.hedge_at = self.now + wait, math.inf

    # Time.

    def due(self) -> float:
        times = [a.deadline(self.timeout) for a in self.calls if a.phase != "done"]
        for caller in self.callers:
            if not caller.done:
                times.append(caller.hedge_at)
                if caller.waiting_until is not None:
                    times.append(caller.waiting_until)
        return min(times, default=math.inf)

    def advance(self, to: float) -> None:
        while (when := self.due()) <= to:
            self.now = when
            self.settle(self.timeouts_at(when))
            for caller in self.callers:
                if caller.done:
                    continue
                if caller.waiting_until == when:
                    if self.state is not State.ON:
                        self.totals["attempts_denied"] += 1
                        self.end(caller, caller.error)
                    else:
                        self.totals["reattempts"] += 1
                        self.start(caller)
                elif caller.hedge_at == when:
                    if self.state is State.ON and self.budget.withdraw(when):
                        self.totals["hedges"] += 1
                        self.start(caller)
                    else:
                        self.totals["attempts_denied"] += 1
                        caller.hedge_at = math.inf
            self.settle()
        self.now = to

    def timeouts_at(self, when: float) -> Call | None:
        """The attempts whose deadline is ``when``; the one timed out, if any."""
        live = [c for c in self.calls if c.phase != "done"]
        expired = [c for c in live if c.deadline(self.timeout) == when]
        for call in expired:
            if call.phase == "waiting":
                self.line.remove(call)
                self.answer(call, OFF, "shed")
        timed_out = [c for c in expired if c.phase == "running"]
        for call in timed_out:
            self.answer(call, breaky.CallTimeout, "timeouts")
            if not call.waited:
                self.ended(call, failed=True)
        for call in timed_out:
            self.give_back(call)
        return timed_out[0] if timed_out else None


@attrs.define(eq=False)
class RealRun:
    """One run of a caller's function: it waits for the test's word."""

    release: trio.Event = attrs.Factory(trio.Event)
    how: str = "ok"


@attrs.define(eq=False)
class RealCaller:
    """One call made through the real guard, from a background task."""

    via: str
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    runs: list[RealRun] = attrs.Factory(list)
    answer: object = None

    async def fn(self, *, tag: int = 0) -> str:
        assert tag == (1 if self.via == "decorated" else 0)
        run = RealRun()
        self.runs.append(run)
        await run.release.wait()
        if run.how == "counted":
            raise Counted
        if run.how == "not counted":
            raise NotCounted
        return "ok"

    async def make(self, guard: breaky.Guard) -> None:
        with self.scope:
            try:
                if self.via == "run":
                    self.answer = await guard.run(self.fn)
                elif self.via == "decorated":
                    self.answer = await guard(self.fn)(tag=1)
                else:
                    self.answer = await guard.raising.run(self.fn)
            except (Counted, NotCounted, breaky.CallTimeout) as exc:
                self.answer = type(exc)
            except breaky.BreakerOff as exc:
                self.answer = ("BreakerOff", exc.shed)
            return
        self.answer = "cancelled"


def run_model_test(policy: Policy) -> None:
    clock = trio.testing.MockClock(autojump_threshold=math.inf)

    def in_trio(fn: Any, *args: Any) -> Any:
        async def step() -> Any:
            result = await fn(*args)
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step)

    def now_in_trio(fn: Any) -> Any:
        async def do() -> Any:
            return fn()

        return in_trio(do)

    async def main() -> None:
        async with trio.open_nursery() as background:

            class GuardWithAttemptsMatchesModel(RuleBasedStateMachine):
                def __init__(self) -> None:
                    super().__init__()
                    seed = random.getrandbits(32)
                    mine = attrs.evolve(policy, rng=random.Random(seed))
                    self.guard = breaky.Guard("g", policy=mine)
                    counts = (Counted,) if policy.failure_exceptions else (Exception,)
                    self.model = AttemptsModel(policy, counts, random.Random(seed))
                    self.model.now = trio.from_thread.run_sync(trio.current_time)
                    self.real: list[RealCaller] = []

                def teardown(self) -> None:
                    def cancel_all() -> None:
                        for caller in self.real:
                            caller.scope.cancel()

                    now_in_trio(cancel_all)

                def sleep(self, dt: float) -> None:
                    async def sleep() -> None:
                        clock.autojump_threshold = 0
                        await trio.sleep(dt)
                        clock.autojump_threshold = math.inf

                    in_trio(sleep)
                    self.model.advance(self.model.now + dt)

                @rule(
                    via=st.sampled_from(["run", "run", "decorated", "raising"]),
                    cancelled=st.sampled_from([False] * 5 + [True]),
                )
                def call(self, via: str, cancelled: bool) -> None:
                    """One call, a moment after anything before it."""
                    self.sleep(0.01)
                    real = RealCaller(via)
                    self.real.append(real)
                    if cancelled:
                        real.scope.cancel()

                    def start() -> None:
                        background.start_soon(real.make, self.guard)

                    now_in_trio(start)
                    self.model.make(len(self.real) - 1, via, cancelled=cancelled)

                def running(self) -> list[tuple[Caller, Call]]:
                    return [
                        (caller, attempt)
                        for caller in self.model.callers
                        for attempt in caller.attempts
                        if attempt.phase == "running"
                    ]

                @precondition(lambda self: self.running())
                @rule(
                    index=st.integers(0, 100),
                    how=st.sampled_from(["ok", "counted", "counted", "not counted"]),
                )
                def finish(self, index: int, how: str) -> None:
                    running = self.running()
                    caller, attempt = running[index % len(running)]
                    run = self.real[caller.number].runs[caller.ran.index(attempt)]
                    run.how = how
                    now_in_trio(run.release.set)
                    self.model.finish(attempt, how)
                    self.model.settle(attempt)

                @precondition(lambda self: any(not c.done for c in self.model.callers))
                @rule(index=st.integers(0, 100))
                def cancel(self, index: int) -> None:
                    live = [c for c in self.model.callers if not c.done]
                    caller = live[index % len(live)]
                    now_in_trio(self.real[caller.number].scope.cancel)
                    self.model.end(caller, "cancelled")
                    self.model.settle()

                @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 2.5, 5.0, 10.0]))
                def advance(self, dt: float) -> None:
                    self.sleep(dt)

                @rule(what=st.sampled_from(["failure", "force_off", "reset"]))
                def command(self, what: str) -> None:
                    now_in_trio(getattr(self.guard, what))
                    {
                        "failure": self.model.failure_reported,
                        "force_off": self.model.force_off,
                        "reset": self.model.reset,
                    }[what]()
                    self.model.settle()

                @invariant()
                def matches_the_model(self) -> None:
                    trio.from_thread.run_sync(self.check)

                def check(self) -> None:
                    model, guard = self.model, self.guard
                    machine = internals(guard)
                    assert trio.current_time() == model.now
                    assert guard.state is model.state
                    assert machine.retry_at == pytest.approx(model.retry_at)
                    assert machine.trial is (model.trial is not None)
                    assert machine.trials_passed == model.trials_passed
                    if machine.taken is not None:
                        held = [c for c in model.calls if c.holds_place]
                        assert machine.taken == len(held)
                        assert machine.waiting == len(model.line)
                    for caller in model.callers:
                        real = self.real[caller.number]
                        assert len(real.runs) == len(caller.ran), caller
                        if caller.done:
                            assert real.answer == caller.answer, caller
                        else:
                            assert real.answer is None, caller
                    stats = guard.statistics()
                    assert stats.failures == model.failures()
                    assert stats.pending == model.pending
                    for name, value in model.totals.items():
                        assert getattr(stats, name) == value, name
                    assert stats.lost == 0

            await trio.to_thread.run_sync(
                lambda: run_state_machine_as_test(
                    GuardWithAttemptsMatchesModel,
                    settings=settings(
                        max_examples=EXAMPLES,
                        stateful_step_count=50,
                        deadline=None,
                        suppress_health_check=list(HealthCheck),
                        print_blob=True,
                    ),
                )
            )
            background.cancel_scope.cancel()

    trio.run(main, clock=clock)


@pytest.mark.timeout(120 * EXAMPLES // 60)
@pytest.mark.parametrize("policy", POLICIES.values(), ids=list(POLICIES.keys()))
def test_the_guard_with_attempts_matches_its_model(policy: Policy) -> None:
    run_model_test(policy)
