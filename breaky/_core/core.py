"""The core of one breaker, whatever its kind: the one place that decides.

A :class:`Core` holds a breaker's name, policy, state machine, counters and
subscribers. Both kinds of breaker (a resource breaker, a guard) tell it what
happened through a few entries: :meth:`Core.feed` (any machine input, with a
reason), :meth:`Core.judge` and :meth:`Core.outcome` (how a call ended and
whether that is a failure). It applies the input, logs and publishes the
change, then asks the kind to apply the effects of the change through its
:class:`Effects` (a resource breaker dismisses its instance and answers its
queue OFF; a guard has nothing to cancel).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, cast, final

import attrs
import trio

from .events import Publisher, StateChange, StateChanges
from .machine import Hold, Machine, State
from .policy import Kind, check_count
from .statistics import BreakerStatistics, Totals

if TYPE_CHECKING:
    from collections.abc import Callable

    from .policy import Policy

logger = logging.getLogger("breaky")


class Effects(Protocol):
    """What one kind of breaker does about its core's inputs."""

    def react(self, change: StateChange | None) -> None:
        """After every input: ``change`` is the state change it made, if any."""


def failure_rule(policy: Policy, kind: Kind) -> Callable[[Exception], bool]:
    """Whether an exception counts one failure, by ``failure_exceptions``.

    ``None`` means the kind's default: a resource breaker's caller decides
    (none count); for a guard every ``Exception`` does.
    """
    kinds = policy.failure_exceptions
    if kinds is None:
        counts = kind is Kind.GUARD
        return lambda _: counts
    if isinstance(kinds, tuple | type):
        matched = cast("tuple[type[Exception], ...] | type[Exception]", kinds)
        return lambda error: isinstance(error, matched)
    predicate = kinds
    return lambda error: bool(predicate(error))


@final
@attrs.define(eq=False, repr=False)
class Core:
    """One breaker's decisions, counters, subscribers and log records."""

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
    machine: Machine = attrs.field(init=False)
    totals: Totals = attrs.field(init=False, factory=Totals)
    publisher: Publisher = attrs.field(init=False, factory=Publisher)
    counts: Callable[[Exception], bool] = attrs.field(init=False)
    effects: Effects | None = attrs.field(init=False, default=None)
    # Why the next attempt is made, when a fleet turning ON asked for it.
    _fleet_on_reason: str | None = attrs.field(init=False, default=None)
    # The current outage (OFF, or not started yet), for the log: when it
    # began, and the type of the last error whose traceback was logged.
    _off_since: float | None = attrs.field(init=False, default=None)
    _retries_then: int = attrs.field(init=False, default=0)
    _traced: tuple[str, type[BaseException] | None] | None = attrs.field(
        init=False, default=None
    )
    # The clock the machine's times were read on (a guard outlives a run).
    _clock: trio.abc.Clock | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        state = State.STARTING if self.kind is Kind.RESOURCE else State.ON
        self.machine = Machine(self.policy, state=state)
        self.counts = failure_rule(self.policy, self.kind)

    @property
    def noun(self) -> str:
        """What log records call it: ``breaker`` or ``guard``."""
        return "breaker" if self.kind is Kind.RESOURCE else "guard"

    # Inputs.

    def now(self) -> float:
        """Trio's time; times on another run's clock are carried over first."""
        clock = trio.lowlevel.current_clock()
        now = clock.current_time()
        if clock is not self._clock:
            if self._clock is not None:
                self.machine.new_clock(now)
            self._clock = clock
        return now

    def feed(self, event: Callable[[Machine, float], object], reason: str) -> None:
        """Apply one input to the machine, now: the one place state changes."""
        machine = self.machine
        old = machine.state
        now = self.now()
        event(machine, now)
        if event is Machine.attempt_succeeded:
            self._traced = None  # it works again: the next failure is news
        new = machine.state
        change = None
        if new is not old:
            change = StateChange(self.name, old, new, reason, now, self.group, self.key)
            self._changed(change)
        if self.effects is not None:
            self.effects.react(change)
        if change is not None:
            self.publisher.publish(change)
            if self._watchers is not None:
                self._watchers.publish(change)
            if new is State.STOPPED:
                self.publisher.end()

    def failed(self, reason: str) -> None:
        """One failure, with the reason the log and the change will give."""
        self.feed(Machine.failure, reason)

    def failure_reported(self) -> None:
        """The caller's ``failure()``: the call it made failed after all."""
        self.feed(Machine.failure_reported, "failure() was called")

    def judge(self, error: Exception | None, sent_at: float | None) -> str | None:
        """Count how a call was answered; return why it failed, if it did.

        ``error`` is the call's exception (``None`` for a reply); ``sent_at``
        is when it was made, if its duration matters (slow calls).
        """
        totals = self.totals
        reason = None
        if error is None:
            totals.replies += 1
        else:
            totals.errors += 1
            if self.counts(error):
                reason = f"a call failed with {type(error).__name__}"
        limit = self.policy.slow_call_duration
        if (
            limit is not None
            and sent_at is not None
            and trio.current_time() - sent_at > limit
        ):
            totals.slow_calls += 1
            reason = reason or "a call was slow"
        return reason

    def outcome(self, reason: str | None) -> None:
        """A call ended: a failure with ``reason``, or (``None``) a success."""
        if reason is not None:
            self.failed(reason)
        elif self.machine.counts_successes:
            self.feed(Machine.success, "a call succeeded")

    async def refuse(self, *, shed: bool) -> None:
        """A call is answered OFF (not serving, or ``shed``): one checkpoint.

        Counted as OFF or shed once the checkpoint is passed; a caller
        cancelled in it got ``Cancelled``, and is counted so.
        """
        totals = self.totals
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            totals.cancelled += 1
            raise
        if shed:
            totals.shed += 1
        else:
            totals.off += 1

    def fleet_says(self, event: Callable[[Machine, float], None], reason: str) -> None:
        """What a fleet says (see :mod:`breaky._core.fleet`): one more input."""
        machine = self.machine
        # The next attempt's reason says so; one that is ON already has no
        # attempt to make, so a later, unrelated one must not say it.
        if (
            event is Machine.fleet_on
            and machine.hold is not Hold.NONE
            and not machine.accepting
        ):
            self._fleet_on_reason = reason
        self.feed(event, reason)

    def attempt_reason(self, what: str) -> str:
        """``what`` (an attempt succeeded), and why it was made if a fleet asked."""
        reason, self._fleet_on_reason = self._fleet_on_reason, None
        return what if reason is None else f"{what} after {reason}"

    def begin_trial(self) -> int:
        """A guard lets one call through as the trial: its ticket."""
        self.totals.retries += 1
        return self.machine.trial_began(self.now())

    def end_trial(self, ticket: int, *, passed: bool | None) -> None:
        """The trial ``ticket`` passed, failed, or (``None``) was withdrawn."""
        if ticket != self.machine.trial:
            return  # a trial the breaker no longer waits for changes nothing
        if passed is None:
            reason = "a trial call was withdrawn"
        elif passed:
            reason = self.attempt_reason("a trial call succeeded")
        else:
            reason = "a trial call failed"
        self.feed(
            lambda machine, now: machine.trial_ended(now, ticket, passed=passed),
            reason,
        )

    def stop(self) -> None:
        """Stop for good: answer OFF, end the subscribers."""
        if self.machine.state is not State.STOPPED:
            self.feed(Machine.stop, "stopped")

    # Views.

    def subscribe(self, max_buffer: int) -> StateChanges:
        """A channel of this breaker's later state changes."""
        check_count("max_buffer", max_buffer, minimum=1)
        return self.publisher.subscribe(max_buffer)

    def statistics(
        self, pending: int, concurrency_limit: int | None = None
    ) -> BreakerStatistics:
        """A snapshot, with the calls the kind has ``pending`` and its limit."""
        return BreakerStatistics(
            state=self.machine.state,
            failures=self.machine.failures_at(self.now()),
            pending=pending,
            concurrency_limit=concurrency_limit,
            **attrs.asdict(self.totals),
        )

    def extra(self) -> dict[str, object]:
        """The ``extra`` of every log record about this breaker."""
        extra: dict[str, object] = {
            "breaker": self.name,
            "state": self.machine.state.value,
        }
        if self.group is not None:
            extra["group"], extra["key"] = self.group, self.key
        return extra

    # Log records.

    def log_error(self, what: str, error: BaseException | None) -> None:
        """Log that an instance or attempt failed: ``what`` happened.

        The first failure of an outage is an ERROR with its traceback, and so
        is one of a new kind (another ``what``, another type of error); a
        repeat, until an attempt succeeds again, is one WARNING line that
        names the error. Either way the record's ``error``
        attribute is the exception (or ``None``).
        """
        key = (what, None if error is None else type(error))
        # The error itself rides along, traceback or not, for log handlers.
        extra = {**self.extra(), "error": error}
        if key == self._traced:
            detail = "" if error is None else f" ({_describe(error)})"
            logger.warning(
                "%s %r: the %s again%s", self.noun, self.name, what, detail, extra=extra
            )
            return
        self._traced = key
        logger.error(
            "%s %r: the %s", self.noun, self.name, what, exc_info=error, extra=extra
        )

    def _changed(self, change: StateChange) -> None:
        old, new = change.old, change.new
        totals = self.totals
        if (new is State.OFF or new is State.FORCED_OFF) and self._off_since is None:
            # An outage begins (a reset after force_off() continues it).
            self._off_since, self._retries_then = change.time, totals.retries
        if new is State.OFF and old is not State.FORCED_OFF:
            if self.machine.sees_off:
                totals.trips += 1  # its own failures
            else:
                totals.fleet_holds += 1  # a fleet's word
        if new is State.ON:
            self._fleet_on_reason = None
            self._log_on(change)
        elif new is State.STOPPED:
            # A group forgets idle keys as a matter of course: not news.
            level = logging.INFO if self.group is None else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(
                    level, "%s %r stopped", self.noun, self.name, extra=self.extra()
                )
        elif new is State.OFF and old is State.FORCED_OFF:
            logger.info("%s %r was reset", self.noun, self.name, extra=self.extra())
        elif new is State.FORCED_OFF:
            logger.warning("%s %r forced OFF", self.noun, self.name, extra=self.extra())
        else:
            self._log_off(change)

    def _log_on(self, change: StateChange) -> None:
        since, self._off_since = self._off_since, None
        self._traced = None
        summary = ""
        if since is not None:
            attempts = self.totals.retries - self._retries_then
            summary = (
                f", after {change.time - since:.3g} s OFF and "
                f"{attempts} attempt{'' if attempts == 1 else 's'}"
            )
        logger.info(
            "%s %r is ON (%s)%s",
            self.noun,
            self.name,
            change.reason,
            summary,
            extra=self.extra(),
        )

    def _log_off(self, change: StateChange) -> None:
        machine = self.machine
        retry_at = machine.retry_at
        attempt = "start" if self.kind is Kind.RESOURCE else "trial call"
        next_attempt = (
            ""
            if retry_at is None
            else f"; next {attempt} in {retry_at - change.time:g} s"
        )
        if machine.hold is not Hold.NONE:
            logger.error(
                "%s %r turned OFF (%s)%s",
                self.noun,
                self.name,
                change.reason,
                next_attempt,
                extra=self.extra(),
            )
            return
        logger.error(
            "%s %r turned OFF after %d failures (last: %s)%s",
            self.noun,
            self.name,
            machine.failures,
            change.reason,
            next_attempt,
            extra=self.extra(),
        )


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
