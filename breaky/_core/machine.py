"""The circuit breaker's decisions, with no I/O and no Trio (the sans-I/O core).

Everything that affects a breaker's state lives here; the two kinds of
breaker around it (a resource breaker's runner, a guard's call path) tell a
:class:`Machine` what happened and when, then read what to do next.

The inputs are named for what they mean to both kinds. An *attempt* is what
tests the dependency while OFF: a resource breaker starts its resource, a
guard lets one *trial* call through. An *outcome* is how a call (or, for a
resource breaker, an instance) ended: a success, or a failure.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, final

import attrs

from breaky._core.outcomes import Failures
from breaky._core.states import Hold, State

if TYPE_CHECKING:
    from breaky._core.policy import Policy


@final
@attrs.frozen
class Step:
    """What one input did to a breaker, and what its kind must do about it.

    The kinds act on a step; they never read the machine. ``retry_at`` is
    the one retry timer (``None``: none armed), ``attempt`` says an attempt
    (a start, a guard's trial) may be made now, ``dismiss`` that the attempt
    or instance under way is no longer wanted (a trip, ``force_off()``, a
    fleet's hold), ``turn_away`` that calls waiting (a queue, a line) get OFF.
    """

    old: State
    new: State
    retry_at: float | None
    attempt: bool
    dismiss: bool
    turn_away: bool

    @property
    def changed(self) -> bool:
        """Whether the state changed."""
        return self.old is not self.new


# With no max_retry_timeout, the wait between attempts stops growing here
# (a day), unless retry_timeout is longer: a backoff never reaches infinity.
LONGEST_WAIT = 86_400.0

# The longest random delay before the attempt that fleet ON asks of each held
# instance: the fleet's instances reconnect within half a second, not all in
# the same millisecond.
FLEET_ON_SPREAD = 0.5


@final
@attrs.define
class Machine:
    """The pure state machine of one breaker.

    Every input takes ``now`` (seconds on Trio's clock) and returns nothing
    (but :meth:`trial_began`, which returns the trial's ticket): the caller
    compares :attr:`state` before and after to see a transition.
    ``retry_at`` is not ``None`` exactly when the breaker is OFF and waiting to
    retry, so there is never more than one retry timer. While a fleet holds it
    OFF (``hold`` is ``HELD``) there is no timer and nothing is tried.
    """

    policy: Policy
    state: State = State.STARTING
    # The count rule with no window: a success resets the count (failures
    # must come in a row). A guard's default; see Policy.failures_in_a_row.
    in_a_row: bool = False
    retry_at: float | None = None
    # What the fleet, if any, says of this breaker.
    hold: Hold = Hold.NONE
    # OFF by its own failures (a trip, or a failed attempt of its own, the
    # fleet's prober's included), not only because a fleet holds it: what a
    # fleet reports.
    sees_off: bool = False
    # The wait before the next attempt while OFF, before jitter.
    retry_wait: float = attrs.field(init=False)
    # The jitter's random source: the policy's, or the breaker's own.
    rng: random.Random = attrs.field(init=False)
    # The ticket of the guard's trial call in flight, if any: it holds the
    # one place of a trial until it ends, whatever happens meanwhile.
    trial: int | None = attrs.field(init=False, default=None)
    # The trial in flight no longer decides (forced OFF, held, stopped since).
    trial_void: bool = attrs.field(init=False, default=False)
    # When the last failure was counted (a call, a crash, a failed attempt).
    last_failure: float | None = attrs.field(init=False, default=None)
    # Trials that succeeded since the breaker last turned OFF.
    trials_passed: int = attrs.field(init=False, default=0)
    _tickets: int = attrs.field(init=False, default=0)
    # What the failure rule (count or rate) remembers.
    _failures: Failures = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.retry_wait = self.policy.retry_timeout
        self.rng = self.policy.rng or random.Random()  # noqa: S311 - not crypto
        self._failures = Failures(self.policy, in_a_row=self.in_a_row)

    @property
    def accepting(self) -> bool:
        """Whether calls go through (else they are answered OFF)."""
        return self.state is State.ON or self.state is State.STARTING

    @property
    def wants_attempt(self) -> bool:
        """Whether an attempt may be made now: a start, or a trial call."""
        return self.accepting or (
            self.state is State.OFF
            and self.retry_at is None
            and self.hold is not Hold.HELD
        )

    @property
    def trial_wanted(self) -> bool:
        """Whether a guard's next call is a trial: OFF, due, and none in flight."""
        return (
            self.state is State.OFF
            and self.retry_at is None
            and self.hold is not Hold.HELD
            and self.trial is None
        )

    @property
    def failures(self) -> int:
        """The failures counted, as of the last input."""
        return self._failures.count

    @property
    def wants_successes(self) -> bool:
        """Whether a success would change anything: else it needs no input."""
        return self._failures.wants_successes

    def waiting(self, now: float) -> bool:
        """Whether the retry wait is still running at ``now`` (a query)."""
        return self.retry_at is not None and now < self.retry_at

    def failures_at(self, now: float) -> int:
        """The failures that count at ``now``: a query, it changes nothing."""
        return self._failures.at(now)

    def after(self, old: State) -> Step:
        """The step the last input made, from state ``old``: what to do now."""
        new = self.state
        attempt = self.wants_attempt
        return Step(
            old,
            new,
            self.retry_at,
            attempt,
            dismiss=new is State.FORCED_OFF or (new is State.OFF and not attempt),
            turn_away=new is not old and new is not State.ON,
        )

    # Outcomes while ON (or STARTING): what the failure rule counts.

    def failure(self, now: float) -> None:
        """Something failed: a call, a crash, a failed restart, a timeout."""
        if not self.accepting:
            return  # failures while OFF or STOPPED change nothing
        self.last_failure = now
        if self._failures.failed(now):
            self._trip(now)

    def failure_reported(self, now: float) -> None:
        """The caller says a call failed (``failure()``), after its outcome.

        For the count rule this is one failure. For the rate rule the call
        was already counted as a success, so that success becomes a failure
        (one call, one outcome); with no success left in the window, it is a
        failure of its own.
        """
        tripped = self._failures.amended(now) if self.accepting else None
        if tripped is None:
            self.failure(now)
        elif tripped:
            self._trip(now)

    def new_clock(self, now: float) -> None:
        """The times so far were read on another clock (another ``trio.run``).

        A module-level guard outlives a Trio run, and each run's clock has its
        own offset, so how long ago anything happened is unknown: a retry
        wait is over (the next call is the one trial), and the failures
        counted are kept as if they happened ``now``.
        """
        self.retry_at = None
        self._failures.rebase(now)

    def success(self, now: float) -> None:
        """A call succeeded: counted by the rate rule, a reset of failures in a row."""
        if self.accepting:
            self._failures.succeeded(now)

    # Attempts: a resource breaker's starts, a guard's trial calls.

    def attempt_succeeded(self, now: float) -> None:  # noqa: ARG002 - every input has a time
        """A start succeeded (``task_status.started()``), or a trial passed."""
        if not self.wants_attempt:
            return  # a dismissed attempt, too late: stopped, or OFF and waiting
        if self.state is State.ON:
            return  # a restart after a crash: nothing to decide
        if self.state is State.OFF:
            self.trials_passed += 1
            if self.trials_passed < self.policy.trial_calls:
                return  # the next call is the next trial, at once
        # Turning ON (first start or recovery) starts a fresh count.
        self._failures.clear()
        self.retry_wait = self.policy.retry_timeout
        self.state = State.ON
        self.sees_off = False
        # The prober's start succeeded: it probes no more, and a later trip
        # is its own news, which the fleet's ON (for this start) keeps.
        self.hold = Hold.NONE

    def attempt_failed(self, now: float) -> None:
        """A start failed (ended before ``started()``), or a trial failed."""
        if self.state is State.OFF:
            # An attempt failed: stay OFF and wait longer (the backoff).
            cap = self.policy.max_retry_timeout
            if cap is None:  # the waits stop growing somewhere: never infinity
                cap = max(self.policy.retry_timeout, LONGEST_WAIT)
            self.retry_wait = min(self.retry_wait * self.policy.retry_backoff, cap)
            self.last_failure = now
            self.trials_passed = 0
            self._arm(now)
            if self.hold is not Hold.HELD:
                # Still failing, as seen from here (the prober's own attempt
                # included): what the fleet counts, whatever led here.
                self.sees_off = True
        else:
            self.failure(now)

    def trial_began(self, now: float) -> int:  # noqa: ARG002
        """A guard lets a call through as the trial; returns its ticket.

        Only while :attr:`wants_attempt` and no other trial is in flight.
        """
        self._tickets += 1
        self.trial = self._tickets
        return self._tickets

    def trial_ended(self, now: float, ticket: int, *, passed: bool | None) -> None:
        """The trial ``ticket`` passed, failed, or (``None``) was withdrawn.

        A withdrawn trial (its caller was cancelled) frees its place: the
        next call is the trial. A trial the breaker no longer waits for (it
        was forced OFF, reset or held since) changes nothing.
        """
        if ticket != self.trial:
            return
        self.trial = None
        void, self.trial_void = self.trial_void, False
        if passed is None or void or self.state is not State.OFF:
            return
        if passed:
            self.attempt_succeeded(now)
        else:
            self.attempt_failed(now)

    def retry_due(self, now: float) -> None:
        """Time passed; if the retry deadline is reached, an attempt is wanted."""
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None

    # Commands.

    def force_off(self, now: float) -> None:  # noqa: ARG002
        """Turn OFF until :meth:`reset`, whatever the failures."""
        if self.state is not State.STOPPED:
            self.state = State.FORCED_OFF
            self.retry_at = None
            self.sees_off = False
            self._forget_trial()

    def force_on(self, now: float) -> None:  # noqa: ARG002
        """Turn ON by hand: the dependency is known to be back; count afresh.

        A resource breaker with no instance running starts one at once. A
        manual override, as :meth:`reset` is: whatever a fleet says.
        """
        if self.state is State.STOPPED:
            return
        self._failures.clear()
        self.retry_wait = self.policy.retry_timeout
        self.retry_at = None
        self.hold = Hold.NONE
        self.sees_off = False
        self._forget_trial()
        if self.state is not State.STARTING:
            self.state = State.ON

    def reset(self, now: float) -> None:  # noqa: ARG002
        """Forget the failures; when OFF (forced or not), attempt now."""
        if self.state is State.STOPPED:
            return
        self._failures.clear()
        self.retry_wait = self.policy.retry_timeout
        # A manual override: this instance tries now, whatever its fleet says
        # (until the fleet's state next changes).
        self.hold = Hold.NONE
        self.sees_off = False
        if self.state is State.OFF or self.state is State.FORCED_OFF:
            # A trial in flight stays the one trial: its outcome decides.
            self.state = State.OFF
            self.retry_at = None
            self.trials_passed = 0

    def stop(self, now: float) -> None:  # noqa: ARG002
        """The breaker was asked to stop; nothing is attempted after this."""
        self.state = State.STOPPED
        self.retry_at = None
        self.hold = Hold.NONE
        self.sees_off = False
        self._forget_trial()

    # What a fleet says. Each is idempotent: saying it again changes nothing.

    def fleet_off(self, now: float) -> None:
        """The fleet holds the breaker OFF and another instance probes."""
        self._held(now, Hold.HELD)

    def fleet_probe(self, now: float) -> None:
        """The fleet holds the breaker OFF and this instance probes."""
        self._held(now, Hold.PROBER)

    def fleet_on(self, now: float) -> None:
        """The fleet no longer holds it OFF: attempt soon, at a random moment."""
        old, self.hold = self.hold, Hold.NONE
        if old is Hold.NONE or self.state is not State.OFF:
            return
        self.sees_off = False
        soon = now + FLEET_ON_SPREAD * self.rng.random()
        if self.retry_at is not None:
            self.retry_at = min(self.retry_at, soon)
        elif old is Hold.HELD:
            self.retry_at = soon
        # else: the prober's attempt is under way.

    def fleet_lost(self, now: float) -> None:
        """The fleet cannot be reached: the local rules alone apply again."""
        old, self.hold = self.hold, Hold.NONE
        if old is Hold.HELD and self.state is State.OFF:
            self._arm(now)  # retry at the policy's rate, as if never held

    def _held(self, now: float, hold: Hold) -> None:
        if self.state is State.STOPPED:
            return  # out of the fleet for good
        old, self.hold = self.hold, hold
        if self.state is State.FORCED_OFF:
            return  # until reset(), which overrides the hold
        self.sees_off = False  # the fleet knows; no report while held
        if self.accepting:
            self.state = State.OFF
            self.retry_wait = self.policy.retry_timeout
            self.retry_at = None
            self.trials_passed = 0
            if hold is Hold.PROBER:
                self._arm(now)
        elif hold is Hold.HELD:
            self.retry_at = None  # an attempt under way is dismissed
            self._forget_trial()
        elif old is Hold.HELD:
            self._arm(now)  # the new prober waits one retry period first

    def _trip(self, now: float) -> None:
        self.state = State.OFF
        self.retry_wait = self.policy.retry_timeout
        self.trials_passed = 0
        self._arm(now)
        self.sees_off = True

    def _forget_trial(self) -> None:
        # A trial in flight keeps its place until it ends, deciding nothing:
        # at most one trial runs, whatever the switches meanwhile.
        self.trial_void = self.trial is not None
        self.trials_passed = 0

    def _arm(self, now: float) -> None:
        wait = self.retry_wait
        jitter = self.policy.retry_jitter
        if jitter:
            wait *= 1 + jitter * (2 * self.rng.random() - 1)
        self.retry_at = now + wait
