"""The one place a breaker's state machine is fed, and what it says back.

:class:`Decisions` owns the machine of one breaker: every input goes through
:meth:`Decisions.feed`, which applies it at Trio's time, logs and publishes
the change, turns the line away when the breaker stops serving, and hands
the kind a :class:`~breaky._core.machine.Step` through its :class:`Effects`
(a resource breaker dismisses its instance and answers its queue OFF; a
guard has nothing to do). :class:`~breaky._core.core.Core` builds admission
and outcomes on it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, final

import attrs
import trio

from breaky._core.admission import failure_rule
from breaky._core.checks import check_count
from breaky._core.events import Publisher, StateChange, StateChanges
from breaky._core.fleet import Member
from breaky._core.internals import Internals
from breaky._core.log import OutageLog
from breaky._core.machine import Machine
from breaky._core.places import Places
from breaky._core.policy import Kind
from breaky._core.states import Hold, State
from breaky._core.statistics import BreakerStatistics, Totals

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaky._core.machine import Step
    from breaky._core.policy import Policy

_ON = State.ON


class _Clock(Protocol):
    """What the core reads of a clock: Trio's, or the time outside a run."""

    def current_time(self) -> float:
        """Seconds."""
        ...


@final
class _OutsideTrio:
    """The time outside a Trio run: monotonic, and no run's clock."""

    def current_time(self) -> float:
        """Seconds, monotonic."""
        return time.monotonic()


OUTSIDE_TRIO = _OutsideTrio()


def outside_trio() -> _Clock:
    """The clock outside a run; a thread of a live run is refused instead.

    A breaker belongs to its run's thread: read from a worker thread, its
    times would be mixed with another clock's and its state raced.
    """
    try:
        trio.from_thread.run_sync(trio.lowlevel.current_clock)
    except RuntimeError:
        return OUTSIDE_TRIO
    msg = (
        "a breaker belongs to its Trio run's thread: call this there, e.g. "
        "trio.from_thread.run_sync(breaker.statistics)"
    )
    raise RuntimeError(msg)


class Effects(Protocol):
    """What one kind of breaker does about its core's inputs."""

    def react(self, step: Step) -> None:
        """After every input, with what it asks of the kind."""


@attrs.define(eq=False, repr=False)
class Decisions:
    """One breaker's machine, counters, subscribers and log: what decides."""

    name: str
    policy: Policy
    kind: Kind
    # Where every change is published besides this breaker's own
    # subscribers: its supervisor's (or a group's), if any.
    _watchers: Publisher | None = None
    # For a key of a keyed group: the group's name and the key (the name is
    # then "group[key]"); set before the first input.
    group: str | None = attrs.field(init=False, default=None)
    key: str | None = attrs.field(init=False, default=None)
    _machine: Machine = attrs.field(init=False)
    totals: Totals = attrs.field(init=False, factory=Totals)
    publisher: Publisher = attrs.field(init=False, factory=Publisher)
    counts: Callable[[Exception], bool] = attrs.field(init=False)
    # Whether a success would change anything now (the rate rule, or failures
    # in a row to reset): read on the lean path, kept up to date by feed().
    failing: bool = attrs.field(init=False, default=False)
    effects: Effects | None = attrs.field(init=False, default=None)
    # The line of calls waiting for a place: a guard's bulkhead.
    line: Places | None = attrs.field(init=False, default=None)
    log: OutageLog = attrs.field(init=False)
    # Why the next attempt is made, when a fleet turning ON asked for it.
    _fleet_on_reason: str | None = attrs.field(init=False, default=None)
    # The clock the machine's times were read on (a guard outlives a run).
    _clock: _Clock | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        resource = self.kind is Kind.RESOURCE
        in_a_row = self.policy.failures_in_a_row
        self._machine = Machine(
            self.policy,
            state=State.STARTING if resource else State.ON,
            in_a_row=not resource if in_a_row is None else in_a_row,
        )
        self.failing = self._machine.wants_successes
        self.counts = failure_rule(self.policy, self.kind)
        self.log = OutageLog(
            "breaker" if resource else "guard",
            self.name,
            self.extra,
            "start" if resource else "trial call",
        )
        limit = self.policy.max_concurrent
        if limit is not None and not resource:
            self.line = Places(limit, self.policy.max_queued)

    # What the kinds may ask.

    @property
    def state(self) -> State:
        """The breaker's state."""
        return self._machine.state

    @property
    def accepting(self) -> bool:
        """Whether calls are let in (ON, or a resource's first start)."""
        return self._machine.accepting

    @property
    def attempt_wanted(self) -> bool:
        """Whether an attempt (a start) may be made now."""
        return self._machine.wants_attempt

    @property
    def retry_at(self) -> float | None:
        """When the next attempt is due while OFF (the one retry timer)."""
        return self._machine.retry_at

    @property
    def sees_off(self) -> bool:
        """Whether it is OFF by its own failures: what a fleet counts."""
        return self._machine.sees_off

    def failures_now(self) -> int:
        """The failures that count toward the failure rule now."""
        return self._machine.failures_at(self.now())

    def forgettable(self) -> bool:
        """ON with no failure counted: a group may forget it once idle."""
        return self._machine.state is _ON and self.failures_now() == 0

    def in_flight(self) -> int:
        """Calls admitted and not answered yet."""
        totals = self.totals
        return totals.calls - totals.answered()

    # Commands, and what a fleet says.

    def failure_reported(self) -> None:
        """The caller's ``failure()``: the call it made failed after all."""
        self.feed(Machine.failure_reported, "failure() was called")

    def force_off(self) -> None:
        """``force_off()``: OFF until ``reset()``."""
        self.feed(Machine.force_off, "force_off() was called")

    def reset(self) -> None:
        """``reset()``: forget the failures; if OFF, attempt now."""
        self.feed(Machine.reset, "reset() was called")

    def force_on(self) -> None:
        """``force_on()``: ON now, counting afresh."""
        self.feed(Machine.force_on, "force_on() was called")

    def stop(self, reason: str = "stopped") -> None:
        """Stop for good: answer OFF, end the subscribers."""
        if self._machine.state is not State.STOPPED:
            self.feed(Machine.stop, reason)

    def fleet_says(self, event: Callable[[Machine, float], None], reason: str) -> None:
        """What a fleet says (see :mod:`breaky._core.fleet`): one more input."""
        machine = self._machine
        # The next attempt's reason says so; one that is ON already has no
        # attempt to make, so a later, unrelated one must not say it.
        if (
            event is Machine.fleet_on
            and machine.hold is not Hold.NONE
            and not machine.accepting
        ):
            self._fleet_on_reason = reason
        self.feed(event, reason)

    def _attempt_reason(self, what: str) -> str:
        """``what`` (an attempt succeeded), and why it was made if a fleet asked."""
        reason, self._fleet_on_reason = self._fleet_on_reason, None
        return what if reason is None else f"{what} after {reason}"

    # The one place the machine is fed.

    def now(self) -> float:
        """Trio's time; times on another run's clock are carried over first."""
        clock: _Clock
        try:
            clock = trio.lowlevel.current_clock()
        except RuntimeError:
            # Outside a Trio run (a module-level guard's statistics() before
            # or after trio.run): a clock of its own, carried over as another.
            clock = outside_trio()
        now = clock.current_time()
        if clock is not self._clock:
            if self._clock is not None:
                self._machine.new_clock(now)
            self._clock = clock
        return now

    def feed(self, event: Callable[[Machine, float], object], reason: str) -> None:
        """Apply one input to the machine, now: the one place state changes."""
        machine = self._machine
        old = machine.state
        now = self.now()
        event(machine, now)
        self.failing = machine.wants_successes
        step = machine.after(old)
        new = step.new
        change = None
        if new is not old:
            change = StateChange(self.name, old, new, reason, now, self.group, self.key)
            self._changed(change)
        if step.turn_away and self.line is not None:
            self.line.turn_away()
        if self.effects is not None:
            self.effects.react(step)
        if change is not None:
            self.publisher.publish(change)
            if self._watchers is not None:
                self._watchers.publish(change)
            if new is State.STOPPED:
                self.publisher.end()

    def _changed(self, change: StateChange) -> None:
        machine = self._machine
        if change.new is State.OFF and change.old is not State.FORCED_OFF:
            if machine.sees_off:
                self.totals.trips += 1  # its own failures
            else:
                self.totals.fleet_holds += 1  # a fleet's word
        if change.new is _ON:
            self._fleet_on_reason = None
        self.log.changed(
            change,
            attempts=self.totals.retries,
            held=machine.hold is not Hold.NONE,
            failures=machine.failures,
            retry_at=machine.retry_at,
        )

    # Views.

    def internals(self, **kind: float | tuple[object, ...] | None) -> Internals:
        """The test seam's snapshot (see :mod:`breaky._core.internals`)."""
        machine, line = self._machine, self.line
        return Internals(
            retry_at=machine.retry_at,
            hold=machine.hold,
            sees_off=machine.sees_off,
            trial=machine.trial is not None,
            trials_passed=machine.trials_passed,
            failures=machine.failures,
            member=Member(self),
            taken=None if line is None else line.taken,
            waiting=0 if line is None else line.waiting,
            **kind,  # type: ignore[arg-type]
        )

    def subscribe(self, max_buffer: int) -> StateChanges:
        """A channel of this breaker's later state changes."""
        check_count("max_buffer", max_buffer, minimum=1)
        return self.publisher.subscribe(max_buffer)

    def statistics(
        self, pending: int, concurrency_limit: int | None = None
    ) -> BreakerStatistics:
        """A snapshot, with the calls the kind has ``pending`` and its limit."""
        machine = self._machine
        return BreakerStatistics(
            state=self._machine.state,
            next_attempt_at=machine.retry_at,
            last_failure_at=machine.last_failure,
            concurrency_limit=concurrency_limit,
            failures=self._machine.failures_at(self.now()),
            pending=pending,
            **attrs.asdict(self.totals),
        )

    def extra(self) -> dict[str, object]:
        """The ``extra`` of every log record about this breaker."""
        extra: dict[str, object] = {
            "breaker": self.name,
            "state": self._machine.state.value,
        }
        if self.group is not None:
            extra["group"], extra["key"] = self.group, self.key
        return extra
