"""The breaker against a small model of its policy, step by step (fuse-style).

Hypothesis drives a real breaker through random rules from a worker thread,
each step run in Trio with ``trio.from_thread``. Time moves only in the
``advance`` rule: the mock clock auto-jumps then, and stays still otherwise.
After every step the breaker's state, failure count and retry deadline must
equal the model's, its one retry timer must be the model's, and its
statistics must add up. What a fleet says (OFF, you probe, ON, lost) is fed
through the fleet seam, as a fleet would.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
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
    rule,
    run_state_machine_as_test,
)
from support import answered_calls

import breaky
from breaky import OFF, Policy, State
from breaky._core.admission import failure_rule
from breaky._core.fleet import View
from breaky._core.machine import FLEET_ON_SPREAD
from breaky._core.policy import Kind
from breaky._core.states import Hold
from breaky.testing import internals

POLICIES = {
    "seed rule": Policy(failure_threshold=3, retry_timeout=10, call_timeout=5),
    "window and backoff": Policy(
        failure_threshold=3,
        retry_timeout=10,
        call_timeout=5,
        failure_window=20,
        retry_backoff=2,
        max_retry_timeout=20,
        failure_exceptions=(LookupError,),
    ),
}
EXAMPLES = {"default": 150, "long": 3000}[
    os.environ.get("HYPOTHESIS_PROFILE", "default")
]


@attrs.define
class Model:
    """What the policy says must happen: obviously right, and nothing more."""

    policy: Policy
    state: State = State.ON
    now: float = 0.0
    failure_times: list[float] = attrs.Factory(list)
    retry_at: float | None = None
    wait: float = 0.0
    starts_fail: bool = False
    # Deadlines of the calls the running instance holds and never answers.
    hanging: list[float] = attrs.Factory(list)
    hold: Hold = Hold.NONE
    sees_off: bool = False
    retries: int = 0

    def __attrs_post_init__(self) -> None:
        self.wait = self.policy.retry_timeout

    @property
    def accepting(self) -> bool:
        return self.state is State.ON

    def count(self, at: float) -> int:
        window = self.policy.failure_window
        if window is not None:
            self.failure_times = [t for t in self.failure_times if t > at - window]
        return len(self.failure_times)

    def fail(self, at: float) -> None:
        if not self.accepting:
            return
        self.failure_times.append(at)
        if self.count(at) >= self.policy.failure_threshold:
            self.state = State.OFF
            self.hanging.clear()  # the instance is cancelled: they are lost
            self.wait = self.policy.retry_timeout
            self.retry_at = at + self.wait
            self.sees_off = True

    def instance_ended(self, at: float) -> None:
        self.hanging.clear()
        self.fail(at)
        while self.accepting and self.starts_fail:
            self.fail(at)  # each immediate restart fails too

    def attempt(self, at: float) -> None:
        self.retry_at = None
        self.retries += 1
        if self.starts_fail:
            cap = self.policy.max_retry_timeout
            self.wait *= self.policy.retry_backoff
            self.wait = self.wait if cap is None else min(self.wait, cap)
            self.retry_at = at + self.wait
            if self.hold is not Hold.HELD:  # its own attempt, the prober's too
                self.sees_off = True
        else:
            self.state = State.ON
            self.failure_times.clear()
            self.wait = self.policy.retry_timeout
            self.sees_off = False
            self.hold = Hold.NONE  # the prober's start: it probes no more

    def advance(self, to: float) -> None:
        while True:
            due = [t for t in (self.retry_at, *self.hanging) if t is not None]
            if not due or min(due) > to:
                break
            at = min(due)
            if self.retry_at == at:
                self.attempt(at)
            else:
                self.hanging.remove(at)
                self.fail(at)
        self.now = to

    def force_off(self) -> None:
        if self.state is not State.STOPPED:
            self.state = State.FORCED_OFF
            self.retry_at = None
            self.hanging.clear()
            self.sees_off = False

    def reset(self) -> None:
        if self.state is State.STOPPED:
            return
        self.failure_times.clear()
        self.wait = self.policy.retry_timeout
        self.hold = Hold.NONE  # a manual override of the fleet
        self.sees_off = False
        if self.state in (State.OFF, State.FORCED_OFF):
            self.state = State.OFF
            self.attempt(self.now)

    def fleet_holds(self, hold: Hold) -> None:
        """Fleet OFF: held with no timer, or the prober at the policy's rate."""
        if self.state is State.STOPPED:
            return
        old, self.hold = self.hold, hold
        if self.state is State.FORCED_OFF:
            return
        self.sees_off = False
        if self.state is State.ON:
            self.state = State.OFF
            self.hanging.clear()
            self.wait = self.policy.retry_timeout
            self.retry_at = None
            if hold is Hold.PROBER:
                self.retry_at = self.now + self.wait
        elif hold is Hold.HELD:
            self.retry_at = None
        elif old is Hold.HELD:
            self.retry_at = self.now + self.wait

    def fleet_lost(self) -> None:
        """Held instances go back to retrying at the policy's rate."""
        old, self.hold = self.hold, Hold.NONE
        if old is Hold.HELD and self.state is State.OFF:
            self.retry_at = self.now + self.wait

    def fleet_on(self, chosen: float | None) -> None:
        """Released: one start within FLEET_ON_SPREAD (the machine's draw)."""
        old, self.hold = self.hold, Hold.NONE
        if old is Hold.NONE or self.state is not State.OFF:
            return
        self.sees_off = False
        soon = self.now + FLEET_ON_SPREAD
        assert chosen is not None
        assert self.now <= chosen <= min(soon, self.retry_at or soon)
        self.retry_at = chosen
        if chosen <= self.now:
            self.attempt(self.now)


def longest_wait(policy: Policy, wait: float) -> float:
    """The furthest a retry may be from now: ``wait`` capped, plus jitter."""
    cap = policy.max_retry_timeout
    if cap is not None:
        assert wait <= cap
    return wait * (1 + policy.retry_jitter)


@attrs.define
class Script:
    """What the scripted resource is told to do."""

    starts_fail: bool = False


async def scripted(
    inbox: breaky.Inbox[tuple[str, ...], str],
    script: Script,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if script.starts_fail:
        raise ConnectionRefusedError
    task_status.started()
    async with trio.open_nursery() as nursery:
        async for request in inbox:
            match request.message:
                case ("crash",):
                    raise ValueError
                case ("return",):
                    nursery.cancel_scope.cancel()
                    return
                case ("hang",):
                    nursery.start_soon(trio.sleep_forever)
                case ("error", counted):
                    request.fail(LookupError() if counted else ValueError())
                case _:
                    request.reply("ok")


def run_model_test(policy: Policy) -> None:
    clock = trio.testing.MockClock(autojump_threshold=math.inf)
    names = itertools.count()

    def in_trio(fn: Any, *args: Any) -> Any:
        async def step() -> Any:
            result = await fn(*args)
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step)

    async def main() -> None:
        # No grace at stop: time moves only in the advance rule.
        async with (
            breaky.open_supervisor(shutdown_timeout=0) as sup,
            trio.open_nursery() as background,
        ):

            class BreakerMatchesModel(RuleBasedStateMachine):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = Model(policy)
                    self.script = Script()
                    self.name = f"b{next(names)}"

                    async def start() -> breaky.CircuitBreaker[Any, Any]:
                        return await sup.start_circuit_breaker(
                            self.name, scripted, self.script, policy=policy
                        )

                    self.breaker = in_trio(start)
                    self.model.now = trio.from_thread.run_sync(trio.current_time)

                def teardown(self) -> None:
                    if self.name in sup:
                        in_trio(sup.stop_circuit_breaker, self.name)

                def send(self, message: tuple[object, ...]) -> None:
                    """A cast that makes the running resource end."""
                    result = in_trio(self.breaker.cast, message)
                    assert result is (None if self.model.accepting else OFF)
                    if self.model.accepting:
                        self.model.instance_ended(self.model.now)

                @rule()
                def crash(self) -> None:
                    self.send(("crash",))

                @rule()
                def normal_return(self) -> None:
                    self.send(("return",))

                @rule(fail=st.booleans())
                def starts(self, fail: bool) -> None:
                    self.script.starts_fail = self.model.starts_fail = fail

                @rule()
                def report_failure(self) -> None:
                    async def failure() -> None:
                        self.breaker.failure()

                    in_trio(failure)
                    self.model.fail(self.model.now)

                @rule()
                def call_replies(self) -> None:
                    result = in_trio(self.breaker.call, ("reply",))
                    assert result == ("ok" if self.model.accepting else OFF)

                @rule(counted=st.booleans())
                def call_fails(self, counted: bool) -> None:
                    async def call() -> object:
                        try:
                            return await self.breaker.call(("error", counted))
                        except (LookupError, ValueError) as exc:
                            return type(exc)

                    result = in_trio(call)
                    if not self.model.accepting:
                        assert result is OFF
                        return
                    assert result is (LookupError if counted else ValueError)
                    if counted and failure_rule(policy, Kind.RESOURCE)(LookupError()):
                        self.model.fail(self.model.now)

                @rule()
                def call_hangs(self) -> None:
                    async def hang() -> None:
                        async def caller() -> None:
                            with contextlib.suppress(
                                breaky.CallTimeout, breaky.ResourceLost
                            ):
                                await self.breaker.call(("hang",))

                        background.start_soon(caller)

                    in_trio(hang)
                    if self.model.accepting:
                        assert policy.call_timeout is not None
                        self.model.hanging.append(self.model.now + policy.call_timeout)

                @rule(dt=st.sampled_from([0.5, 1.0, 5.0, 10.0, 20.0, 40.0]))
                def advance(self, dt: float) -> None:
                    async def sleep() -> None:
                        clock.autojump_threshold = 0
                        await trio.sleep(dt)
                        clock.autojump_threshold = math.inf

                    in_trio(sleep)
                    self.model.advance(self.model.now + dt)

                @rule()
                def force_off(self) -> None:
                    async def force_off() -> None:
                        self.breaker.force_off()

                    in_trio(force_off)
                    self.model.force_off()

                @rule()
                def reset(self) -> None:
                    async def reset() -> None:
                        self.breaker.reset()

                    in_trio(reset)
                    self.model.reset()

                @rule()
                def stop(self) -> None:
                    if self.name in sup:
                        in_trio(sup.stop_circuit_breaker, self.name)
                    self.model.state = State.STOPPED
                    self.model.retry_at = None
                    self.model.hanging.clear()
                    self.model.hold = Hold.NONE
                    self.model.sees_off = False

                def tell(self, view: View) -> float | None:
                    async def tell() -> float | None:
                        member = internals(self.breaker).member
                        assert member is not None
                        member.tell(view, f"fleet {view.name}")
                        return internals(self.breaker).retry_at

                    return in_trio(tell)  # type: ignore[no-any-return]

                @rule()
                def fleet_off(self) -> None:
                    self.tell(View.OFF)
                    self.model.fleet_holds(Hold.HELD)

                @rule()
                def fleet_probe(self) -> None:
                    self.tell(View.PROBE)
                    self.model.fleet_holds(Hold.PROBER)

                @rule()
                def fleet_on(self) -> None:
                    self.model.fleet_on(self.tell(View.ON))

                @rule()
                def fleet_lost(self) -> None:
                    self.tell(View.LOST)
                    self.model.fleet_lost()

                @invariant()
                def matches_the_model(self) -> None:
                    trio.from_thread.run_sync(self.check)

                def check(self) -> None:
                    # An internals test: the model is compared with the
                    # machine's own fields (retry time, hold, the one timer),
                    # which no public view shows: read through the test seam.
                    model, breaker = self.model, self.breaker
                    machine = internals(breaker)
                    assert trio.current_time() == model.now
                    assert breaker.state is model.state
                    if model.state is not State.STOPPED:
                        failures = breaker.statistics().failures
                        assert failures == model.count(model.now)
                    assert machine.retry_at == pytest.approx(model.retry_at)
                    assert machine.hold is model.hold
                    assert machine.sees_off is model.sees_off
                    # Exactly one retry timer while OFF and waiting, none else;
                    # none at all while held OFF by the fleet.
                    timer = machine.timer
                    if model.retry_at is None:
                        assert (
                            timer is None
                            or model.state is State.FORCED_OFF
                            or (model.hold is Hold.HELD and model.state is State.OFF)
                        )
                        assert timer is None or timer == math.inf
                    else:
                        assert timer is not None
                        assert timer == pytest.approx(model.retry_at)
                    stats = breaker.statistics()
                    assert stats.calls == answered_calls(stats)
                    # Held instances try nothing: every attempt is the model's.
                    assert stats.retries == model.retries
                    # A pending retry is never further off than the policy
                    # allows: its longest wait, jitter included.
                    longest = longest_wait(policy, model.wait)
                    for retry_at in (model.retry_at, machine.retry_at):
                        if retry_at is not None:
                            assert retry_at - model.now <= longest + 1e-9

            await trio.to_thread.run_sync(
                lambda: run_state_machine_as_test(
                    BreakerMatchesModel,
                    settings=settings(
                        max_examples=EXAMPLES,
                        stateful_step_count=40,
                        deadline=None,
                        suppress_health_check=list(HealthCheck),
                        # A failure prints the blob that replays it with
                        # @reproduce_failure, so that no divergence is lost.
                        print_blob=True,
                    ),
                )
            )
            background.cancel_scope.cancel()

    trio.run(main, clock=clock)


# 150 examples take about 5 s; the long profile's 3000 take 20 times that.
@pytest.mark.timeout(120 * EXAMPLES // 150)
@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_the_breaker_matches_its_model(policy: Policy) -> None:
    run_model_test(policy)
