"""The guard against a small model of its policy, step by step (fuse-style).

As ``test_model.py`` does for the resource breaker: Hypothesis drives a real
:class:`breaky.Guard` from a worker thread, each step run in Trio with
``trio.from_thread``, and time moves only in the ``advance`` rule. Every call
is a background task whose function waits for the test to say how it ends
(it returns, raises, or never ends: it hangs until its timeout or its
cancellation), so that the order of outcomes is the test's, never the
scheduler's. What a fleet says (OFF, you probe, ON, lost) is fed through the
fleet seam, as a fleet would. After every step the guard's state, failures,
retry deadline, trial in flight, fleet hold, bulkhead places and statistics
must equal the model's, and every call answered so far must have got the
model's answer.
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
from support import answered_calls

import breaky
from breaky import OFF, Policy, State
from breaky._core.fleet import View
from breaky._core.machine import FLEET_ON_SPREAD, LONGEST_WAIT
from breaky._core.states import Hold
from breaky.testing import internals


class Counted(LookupError):  # noqa: N818 - as the tests name outcomes
    """What a failing dependency raises: counts one failure."""


class NotCounted(ValueError):  # noqa: N818
    """An error the dependency answers with (a 404, say): counts none."""


# Each policy with the exceptions that count one failure under it.
POLICIES: dict[str, tuple[Policy, tuple[type[Exception], ...]]] = {
    "count, bulkhead, backoff and jitter": (
        Policy(
            failure_threshold=3,
            retry_timeout=10,
            call_timeout=3,
            retry_backoff=2,
            max_retry_timeout=40,
            retry_jitter=0.2,
            failure_exceptions=Counted,
            max_concurrent=2,
            max_queued=2,
        ),
        (Counted,),
    ),
    "window, two trials, slow calls, unbounded line": (
        Policy(
            failure_threshold=2,
            failure_window=5,
            retry_timeout=5,
            call_timeout=10,
            trial_calls=2,
            slow_call_duration=2,
            failure_exceptions=(Counted,),
            max_concurrent=1,
        ),
        (Counted,),
    ),
    "failure rate, two trials, jitter": (
        Policy(
            failure_rate=0.5,
            minimum_calls=3,
            failure_window=10,
            retry_timeout=5,
            call_timeout=5,
            trial_calls=2,
            retry_backoff=1.5,
            max_retry_timeout=20,
            retry_jitter=0.1,
            failure_exceptions=lambda error: isinstance(error, Counted),
            max_concurrent=3,
            max_queued=1,
        ),
        (Counted,),
    ),
    "lean: no timeout, every exception counts": (
        Policy(failure_threshold=2, retry_timeout=5, call_timeout=None),
        (Exception,),
    ),
}
EXAMPLES = {"default": 75, "long": 3000}[
    os.environ.get("HYPOTHESIS_PROFILE", "default")
]
# The rate rule keeps outcomes in this many slices of its window.
SLICES = 20


@attrs.define(eq=False)
class Call:
    """One call, as the model sees it."""

    number: int
    made_at: float
    # How it was made: "run", "decorated" (with a keyword argument) or
    # "raising" (BreakerOff for OFF, saying whether it was shed).
    via: str = "run"
    # "running" (fn was called), "waiting" (in the bulkhead's line), "done".
    phase: str = "done"
    trial: bool = False
    holds_place: bool = False
    # When its function was called: a call that waited in line runs later.
    ran_at: float = 0.0
    waited: bool = False
    # The model's answer once done: a result, OFF, an exception type, or
    # "cancelled".
    answer: object = None

    def deadline(self, timeout: float | None) -> float:
        return math.inf if timeout is None else self.made_at + timeout


@attrs.define
class Model:
    """What the policy says must happen: obviously right, and nothing more."""

    policy: Policy
    counts: tuple[type[Exception], ...]
    rng: random.Random
    now: float = 0.0
    state: State = State.ON
    failure_times: list[float] = attrs.Factory(list)
    # The rate rule's outcomes: (when, failed).
    outcomes: list[tuple[float, bool]] = attrs.Factory(list)
    retry_at: float | None = None
    wait: float = 0.0
    trial: Call | None = None
    # The trial in flight decides nothing any more (forced OFF or held since),
    # but holds the one place of a trial until it ends (issue 22, defect 9).
    trial_void: bool = False
    trials_passed: int = 0
    # What its fleet says (see test_model.py): held OFF with no trial, or
    # the prober; and whether it is OFF by its own failures (what it reports).
    hold: Hold = Hold.NONE
    sees_off: bool = False
    calls: list[Call] = attrs.Factory(list)
    line: list[Call] = attrs.Factory(list)
    totals: dict[str, int] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.wait = self.policy.retry_timeout
        names = ("calls", "replies", "errors", "off", "shed", "timeouts", "cancelled")
        for name in (*names, "slow_calls", "retries", "trips", "fleet_holds"):
            self.totals[name] = 0

    # The failure rules.

    def _kept(self, at: float, when: float) -> bool:
        """Whether an outcome at ``when`` is still in the rate rule's window."""
        window = self.policy.failure_window
        assert window is not None
        this = math.floor(at * SLICES / window)
        return this - math.floor(when * SLICES / window) < SLICES

    def failures(self) -> int:
        if self.policy.failure_rate is not None:
            return sum(1 for t, f in self.outcomes if f and self._kept(self.now, t))
        window = self.policy.failure_window
        if window is None:
            return len(self.failure_times)
        return sum(1 for t in self.failure_times if t > self.now - window)

    def fail(self) -> None:
        if self.state is not State.ON:
            return
        if self.policy.failure_rate is not None:
            self.outcomes.append((self.now, True))
        else:
            self.failure_times.append(self.now)
        self.check()

    def failure_reported(self) -> None:
        """``failure()``: under the rate rule, the latest success was a failure."""
        if self.state is not State.ON or self.policy.failure_rate is None:
            self.fail()
            return
        successes = [
            i
            for i, (t, failed) in enumerate(self.outcomes)
            if not failed and self._kept(self.now, t)
        ]
        if not successes:
            self.fail()
            return
        when, _ = self.outcomes[successes[-1]]
        self.outcomes[successes[-1]] = (when, True)
        self.check()

    def check(self) -> None:
        """After a failure: trip if the rule says so."""
        rate = self.policy.failure_rate
        if rate is not None:
            # Once enough outcomes are in the window, by the share failed.
            kept = [f for t, f in self.outcomes if self._kept(self.now, t)]
            enough = len(kept) >= self.policy.minimum_calls
            tripped = enough and sum(kept) / len(kept) >= rate
        else:
            tripped = self.failures() >= self.policy.failure_threshold
        if tripped:
            self.turn_away()
            self.state = State.OFF
            self.wait = self.policy.retry_timeout
            self.trials_passed = 0
            self.arm()
            self.sees_off = True
            self.totals["trips"] += 1

    def succeed(self) -> None:
        if self.state is not State.ON:
            return
        if self.policy.failure_rate is not None:
            self.outcomes.append((self.now, False))
        elif self.in_a_row:
            self.failure_times.clear()  # a guard counts failures in a row

    @property
    def in_a_row(self) -> bool:
        chosen = self.policy.failures_in_a_row
        return (chosen is None or chosen) and self.policy.failure_window is None

    def clear(self) -> None:
        self.failure_times.clear()
        self.outcomes.clear()

    def arm(self) -> None:
        wait = self.wait
        jitter = self.policy.retry_jitter
        if jitter:
            wait *= 1 + jitter * (2 * self.rng.random() - 1)
        self.retry_at = self.now + wait

    # Trials.

    def trial_ended(self, call: Call, *, passed: bool | None) -> None:
        if call is not self.trial:
            return  # not the trial
        self.trial = None
        void, self.trial_void = self.trial_void, False
        if passed is None or void or self.state is not State.OFF:
            return
        if passed:
            self.trials_passed += 1
            if self.trials_passed >= self.policy.trial_calls:
                self.state = State.ON
                self.clear()
                self.wait = self.policy.retry_timeout
                self.sees_off = False
                self.hold = Hold.NONE  # the prober's trial: it probes no more
        else:
            cap = self.policy.max_retry_timeout
            if cap is None:
                cap = max(self.policy.retry_timeout, LONGEST_WAIT)
            self.wait = min(self.wait * self.policy.retry_backoff, cap)
            self.trials_passed = 0
            self.arm()
            if self.hold is not Hold.HELD:
                self.sees_off = True  # still failing, as seen from here

    # Calls.

    @property
    def timeout(self) -> float | None:
        return self.policy.call_timeout

    def call(self, number: int, via: str, *, cancelled: bool) -> Call:
        """A new call at ``now``; ``cancelled``: its caller's scope already is."""
        call = Call(number, self.now, via)
        self.calls.append(call)
        self.totals["calls"] += 1
        limit = self.policy.max_concurrent
        if self.state is not State.ON:
            if self.retry_at is not None and self.now >= self.retry_at:
                self.retry_at = None
            if not (
                self.state is State.OFF
                and self.retry_at is None
                and self.hold is not Hold.HELD
                and self.trial is None
            ):
                self.answer(call, "cancelled" if cancelled else OFF, "off")
                return call
            self.totals["retries"] += 1
            self.trial, call.trial, call.phase = call, True, "running"
            call.ran_at = self.now
        elif limit is not None and (
            len([c for c in self.calls if c.holds_place]) >= limit or self.line
        ):
            queued = self.policy.max_queued
            if queued is not None and len(self.line) >= queued:
                self.answer(call, "cancelled" if cancelled else OFF, "shed")
                return call
            call.phase, call.waited = "waiting", True
            self.line.append(call)
        else:
            call.phase, call.ran_at = "running", self.now
            call.holds_place = limit is not None
        if cancelled:
            self.cancel(call)
        return call

    def answer(self, call: Call, answer: object, total: str) -> None:
        if answer is OFF and call.via == "raising":
            answer = ("BreakerOff", total == "shed")
        call.phase, call.answer = "done", answer
        self.totals["cancelled" if answer == "cancelled" else total] += 1

    def give_back(self, call: Call) -> None:
        """``call`` is done: its place, if it held one, goes to the first in line."""
        if not call.holds_place:
            return
        call.holds_place = False
        if self.line:
            first = self.line.pop(0)
            first.phase, first.holds_place, first.ran_at = "running", True, self.now

    def finish(self, call: Call, how: str) -> None:
        """The running ``call``'s function returned ("ok") or raised."""
        error = {"ok": None, "counted": Counted, "not counted": NotCounted}[how]
        failed = error is not None and issubclass(error, self.counts)
        limit = self.policy.slow_call_duration
        # A call's own time: not the wait in line.
        if limit is not None and self.now - call.ran_at > limit:
            self.totals["slow_calls"] += 1
            failed = True
        self.answer(
            call, "ok" if error is None else error, "errors" if error else "replies"
        )
        self.ended(call, failed=failed)
        self.give_back(call)

    def ended(self, call: Call, *, failed: bool) -> None:
        if call.trial:
            self.trial_ended(call, passed=not failed)
        elif failed:
            self.fail()
        else:
            self.succeed()

    def cancel(self, call: Call) -> None:
        """The caller of ``call`` (running or waiting) was cancelled."""
        if call.phase == "waiting":
            self.line.remove(call)
        elif call.trial:
            self.trial_ended(call, passed=None)
        self.answer(call, "cancelled", "cancelled")
        self.give_back(call)

    def advance(self, to: float) -> None:
        """Time passes: calls reach their timeout, in order of deadline."""
        while True:
            live = [c for c in self.calls if c.phase != "done"]
            due = [c.deadline(self.timeout) for c in live]
            if not due or min(due) > to:
                break
            self.now = min(due)
            expired = [c for c in live if c.deadline(self.timeout) == self.now]
            # Trio cancels every expired scope before any task runs: the
            # waiting calls leave the line first, shed, never run.
            for call in expired:
                if call.phase == "waiting":
                    self.line.remove(call)
                    self.answer(call, OFF, "shed")
            # The calls that time out together are all judged before a
            # waiting call takes a place one of them freed: if they trip the
            # guard, the line is answered OFF.
            timed_out = [c for c in expired if c.phase == "running"]
            for call in timed_out:
                self.answer(call, breaky.CallTimeout, "timeouts")
                if not call.waited:
                    # (One that waited had less than its timeout to run:
                    # overload took the rest, and overload is no outcome.)
                    self.ended(call, failed=True)
            for call in timed_out:
                self.give_back(call)
        self.now = to

    # Commands.

    def turn_away(self) -> None:
        """No longer ON: the calls waiting for a place are answered OFF."""
        for call in self.line:
            self.answer(call, OFF, "off")
        self.line.clear()

    def force_off(self) -> None:
        self.turn_away()
        self.state = State.FORCED_OFF
        self.retry_at = None
        self.trial_void = self.trial is not None
        self.trials_passed = 0
        self.sees_off = False

    def reset(self) -> None:
        self.clear()
        self.wait = self.policy.retry_timeout
        self.hold = Hold.NONE  # a manual override of the fleet
        self.sees_off = False
        if self.state is not State.ON:
            self.state = State.OFF
            self.retry_at = None
            self.trials_passed = 0

    # What the fleet says.

    def fleet_holds(self, hold: Hold) -> None:
        """Fleet OFF: held with no trial, or the prober at the policy's rate."""
        old, self.hold = self.hold, hold
        if self.state is State.FORCED_OFF:
            return
        self.sees_off = False
        if self.state is State.ON:
            self.turn_away()
            self.state = State.OFF
            self.totals["fleet_holds"] += 1
            self.wait = self.policy.retry_timeout
            self.retry_at = None
            self.trials_passed = 0
            if hold is Hold.PROBER:
                self.arm()
        elif hold is Hold.HELD:
            self.retry_at = None
            self.trial_void = self.trial is not None  # it no longer counts
            self.trials_passed = 0
        elif old is Hold.HELD:
            self.arm()  # the new prober waits one retry period first

    def fleet_on(self) -> None:
        """Released: trial within FLEET_ON_SPREAD, at a random moment."""
        old, self.hold = self.hold, Hold.NONE
        if old is Hold.NONE or self.state is not State.OFF:
            return
        self.sees_off = False
        soon = self.now + FLEET_ON_SPREAD * self.rng.random()
        if self.retry_at is not None:
            self.retry_at = min(self.retry_at, soon)
        elif old is Hold.HELD:
            self.retry_at = soon

    def fleet_lost(self) -> None:
        """Held: back to trying at the policy's rate, as if never held."""
        old, self.hold = self.hold, Hold.NONE
        if old is Hold.HELD and self.state is State.OFF:
            self.arm()

    @property
    def pending(self) -> int:
        return len([c for c in self.calls if c.phase != "done"])


@attrs.define(eq=False)
class RealCall:
    """One call made through the real guard, from a background task."""

    via: str
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    release: trio.Event = attrs.Factory(trio.Event)
    how: str = "ok"
    started: bool = False
    answer: object = None

    async def fn(self, *, tag: int = 0) -> str:
        """Wait for the test's word; ``tag``: what a decorated call passes."""
        assert tag == (1 if self.via == "decorated" else 0)
        self.started = True
        await self.release.wait()
        if self.how == "counted":
            raise Counted
        if self.how == "not counted":
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


def run_model_test(policy: Policy, counts: tuple[type[Exception], ...]) -> None:
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

            def background_start(fn: Any, *args: Any) -> None:
                """Start ``fn(*args)`` and let it run until all tasks wait."""

                def start() -> None:
                    background.start_soon(fn, *args)

                now_in_trio(start)

            class GuardMatchesModel(RuleBasedStateMachine):
                def __init__(self) -> None:
                    super().__init__()
                    seed = random.getrandbits(32)
                    mine = attrs.evolve(policy, rng=random.Random(seed))
                    self.guard = breaky.Guard("g", policy=mine)
                    self.model = Model(policy, counts, random.Random(seed))
                    self.model.now = trio.from_thread.run_sync(trio.current_time)
                    self.real: dict[int, RealCall] = {}

                def teardown(self) -> None:
                    def cancel_all() -> None:
                        for call in self.real.values():
                            call.scope.cancel()

                    now_in_trio(cancel_all)

                def pick(self, phases: tuple[str, ...], index: int) -> Call | None:
                    calls = [c for c in self.model.calls if c.phase in phases]
                    return calls[index % len(calls)] if calls else None

                @rule(
                    count=st.integers(1, 3),
                    cancelled=st.lists(
                        st.sampled_from([False] * 3 + [True]), min_size=3, max_size=3
                    ),
                    via=st.sampled_from(["run", "run", "decorated", "raising"]),
                )
                def call(self, count: int, cancelled: list[bool], via: str) -> None:
                    """``count`` calls at once; some callers are already cancelled."""
                    for at_once in cancelled[:count]:
                        real = RealCall(via)
                        number = len(self.real)
                        self.real[number] = real
                        if at_once:
                            real.scope.cancel()
                        background_start(real.make, self.guard)
                        self.model.call(number, via, cancelled=at_once)

                @precondition(lambda self: self.pick(("running",), 0) is not None)
                @rule(
                    index=st.integers(0, 100),
                    how=st.sampled_from(["ok", "counted", "not counted"]),
                )
                def finish(self, index: int, how: str) -> None:
                    call = self.pick(("running",), index)
                    assert call is not None
                    real = self.real[call.number]
                    real.how = how
                    now_in_trio(real.release.set)
                    self.model.finish(call, how)

                @precondition(
                    lambda self: self.pick(("running", "waiting"), 0) is not None
                )
                @rule(index=st.integers(0, 100))
                def cancel(self, index: int) -> None:
                    call = self.pick(("running", "waiting"), index)
                    assert call is not None
                    now_in_trio(self.real[call.number].scope.cancel)
                    self.model.cancel(call)

                @rule(dt=st.sampled_from([0.5, 1.0, 2.5, 5.0, 10.0, 20.0]))
                def advance(self, dt: float) -> None:
                    async def sleep() -> None:
                        clock.autojump_threshold = 0
                        await trio.sleep(dt)
                        clock.autojump_threshold = math.inf

                    in_trio(sleep)
                    self.model.advance(self.model.now + dt)

                @rule(
                    what=st.sampled_from(["failure", "failure", "force_off", "reset"])
                )
                def command(self, what: str) -> None:
                    now_in_trio(getattr(self.guard, what))
                    {
                        "failure": self.model.failure_reported,
                        "force_off": self.model.force_off,
                        "reset": self.model.reset,
                    }[what]()

                @rule(view=st.sampled_from([View.OFF, View.PROBE, View.ON, View.LOST]))
                def fleet_says(self, view: View) -> None:
                    """What a fleet says, fed through its seam."""

                    def tell() -> None:
                        member = internals(self.guard).member
                        assert member is not None
                        member.tell(view, f"fleet {view.name}")

                    now_in_trio(tell)
                    model = self.model
                    {
                        View.OFF: lambda: model.fleet_holds(Hold.HELD),
                        View.PROBE: lambda: model.fleet_holds(Hold.PROBER),
                        View.ON: model.fleet_on,
                        View.LOST: model.fleet_lost,
                    }[view]()

                @invariant()
                def matches_the_model(self) -> None:
                    trio.from_thread.run_sync(self.check)

                def check(self) -> None:
                    # An internals test: the retry deadline, the trial and the
                    # bulkhead's places are the machine's and the bulkhead's
                    # own fields, which no public view shows: read through
                    # the test seam.
                    model, guard = self.model, self.guard
                    machine = internals(guard)
                    assert trio.current_time() == model.now
                    assert guard.state is model.state
                    assert machine.retry_at == pytest.approx(model.retry_at)
                    assert machine.trial is (model.trial is not None)
                    assert machine.trials_passed == model.trials_passed
                    assert machine.hold is model.hold
                    assert machine.sees_off is model.sees_off
                    if machine.taken is not None:
                        held = [c for c in model.calls if c.holds_place]
                        assert machine.taken == len(held)
                        assert machine.waiting == len(model.line)
                    # What each call's function and caller saw.
                    for call in model.calls:
                        real = self.real[call.number]
                        if call.phase == "done":
                            assert real.answer == call.answer, call
                        else:
                            assert real.answer is None, call
                            assert real.started is (call.phase == "running"), call
                    stats = guard.statistics()
                    assert stats.failures == model.failures()
                    assert stats.pending == model.pending
                    for name, value in model.totals.items():
                        assert getattr(stats, name) == value, name
                    assert stats.calls == answered_calls(stats)
                    assert stats.lost == 0

            await trio.to_thread.run_sync(
                lambda: run_state_machine_as_test(
                    GuardMatchesModel,
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


# 75 examples take about 2 s per policy; the long profile's 3000, 40 times that.
@pytest.mark.timeout(120 * EXAMPLES // 75)
@pytest.mark.parametrize(
    ("policy", "counts"), POLICIES.values(), ids=list(POLICIES.keys())
)
def test_the_guard_matches_its_model(
    policy: Policy, counts: tuple[type[Exception], ...]
) -> None:
    run_model_test(policy, counts)
