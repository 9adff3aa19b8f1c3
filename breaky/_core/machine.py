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

import enum
import math
import random
from collections import deque
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from .policy import Policy


class State(enum.Enum):
    """The state of a circuit breaker.

    - ``STARTING``: a resource breaker's first start has not settled; calls
      are queued for it (and answered OFF if every attempt fails).
    - ``ON``: calls go through (a resource may be restarting after a crash:
      calls are queued for it).
    - ``OFF``: too many failures; calls are answered :data:`breaky.OFF` at
      once, and attempts (a start, a trial call) are made at the policy's
      retry rate until one succeeds.
    - ``FORCED_OFF``: turned OFF by ``force_off()``; calls are answered OFF
      and nothing is tried until ``reset()``.
    - ``STOPPED``: the breaker was stopped; calls are answered OFF.
    """

    STARTING = "starting"
    ON = "on"
    OFF = "off"
    FORCED_OFF = "forced off"
    STOPPED = "stopped"


class Hold(enum.Enum):
    """What a fleet says of this instance's breaker (see :mod:`breaky._core.fleet`).

    - ``NONE``: no fleet holds it; the local rules alone apply.
    - ``HELD``: the fleet holds it OFF and another instance probes: no timer,
      no attempt.
    - ``PROBER``: the fleet holds it OFF and this instance probes, at the
      policy's retry rate.
    """

    NONE = "none"
    HELD = "held"
    PROBER = "prober"


# The longest random delay before the attempt that fleet ON asks of each held
# instance: the fleet's instances reconnect within half a second, not all in
# the same millisecond.
FLEET_ON_SPREAD = 0.5

# The failure-rate rule keeps its outcomes in this many slices of the window:
# memory stays constant whatever the call rate, and each outcome counts for
# at least (1 - 1/_SLICES) of the window.
_SLICES = 20


@final
@attrs.define
class Outcomes:
    """The outcomes of the last ``window`` seconds, in slices (the rate rule)."""

    window: float
    # (slice number, outcomes, failures), oldest first.
    _slices: deque[list[int]] = attrs.field(init=False, factory=deque[list[int]])
    calls: int = attrs.field(init=False, default=0)
    failures: int = attrs.field(init=False, default=0)

    def add(self, now: float, *, failed: bool) -> None:
        """Count one outcome at ``now``."""
        self.forget(now)
        number = math.floor(now * _SLICES / self.window)
        slices = self._slices
        if not slices or slices[-1][0] != number:
            slices.append([number, 0, 0])
        last = slices[-1]
        last[1] += 1
        self.calls += 1
        if failed:
            last[2] += 1
            self.failures += 1

    def forget(self, now: float) -> None:
        """Drop the slices that have left the window at ``now``."""
        slices = self._slices
        # A slice leaves once its start is a whole window ago.
        first_kept = math.floor(now * _SLICES / self.window) - _SLICES + 1
        while slices and slices[0][0] < first_kept:
            _, calls, failures = slices.popleft()
            self.calls -= calls
            self.failures -= failures

    def amend(self, now: float) -> bool:
        """Turn the latest success in the window into a failure, if any."""
        self.forget(now)
        for part in reversed(self._slices):  # [number, calls, failures]
            if part[1] > part[2]:
                part[2] += 1
                self.failures += 1
                return True
        return False

    def rebase(self, now: float) -> None:
        """Keep every outcome counted, as if it happened at ``now``."""
        calls, failures = self.calls, self.failures
        self.clear()
        if calls:
            self._slices.append(
                [math.floor(now * _SLICES / self.window), calls, failures]
            )
            self.calls, self.failures = calls, failures

    def failures_at(self, now: float) -> int:
        """The failures still in the window at ``now`` (changes nothing)."""
        first_kept = math.floor(now * _SLICES / self.window) - _SLICES + 1
        return sum(s[2] for s in self._slices if s[0] >= first_kept)

    def clear(self) -> None:
        """Forget every outcome."""
        self._slices.clear()
        self.calls = self.failures = 0


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
    # The ticket of the guard's trial call in flight, if any.
    trial: int | None = attrs.field(init=False, default=None)
    # Trials that succeeded since the breaker last turned OFF.
    trials_passed: int = attrs.field(init=False, default=0)
    _tickets: int = attrs.field(init=False, default=0)
    # The count rule: when each counted failure happened, oldest first.
    _failure_times: deque[float] = attrs.field(init=False, factory=deque[float])
    # The rate rule, when the policy has a failure_rate.
    _outcomes: Outcomes | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.retry_wait = self.policy.retry_timeout
        self.rng = self.policy.rng or random.Random()  # noqa: S311 - not crypto
        if self.policy.failure_rate is not None:
            assert self.policy.failure_window is not None  # noqa: S101 - validated
            self._outcomes = Outcomes(self.policy.failure_window)

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
        if self._outcomes is not None:
            return self._outcomes.failures
        return len(self._failure_times)

    @property
    def counts_successes(self) -> bool:
        """Whether successes matter (the rate rule): else they need no input."""
        return self._outcomes is not None

    def waiting(self, now: float) -> bool:
        """Whether the retry wait is still running at ``now`` (a query)."""
        return self.retry_at is not None and now < self.retry_at

    def failures_at(self, now: float) -> int:
        """The failures that count at ``now``: a query, it changes nothing."""
        if self._outcomes is not None:
            return self._outcomes.failures_at(now)
        window = self.policy.failure_window
        if window is None:
            return len(self._failure_times)
        return sum(1 for t in self._failure_times if t > now - window)

    # Outcomes while ON (or STARTING): what the failure rule counts.

    def failure(self, now: float) -> None:
        """Something failed: a call, a crash, a failed restart, a timeout."""
        if not self.accepting:
            return  # failures while OFF or STOPPED change nothing
        outcomes = self._outcomes
        if outcomes is not None:
            outcomes.add(now, failed=True)
            self._check_rate(now)
        else:
            times = self._failure_times
            times.append(now)
            window = self.policy.failure_window
            if window is not None:
                while times[0] <= now - window:
                    times.popleft()
            if len(times) >= self.policy.failure_threshold:
                self._trip(now)

    def failure_reported(self, now: float) -> None:
        """The caller says a call failed (``failure()``), after its outcome.

        For the count rule this is one failure. For the rate rule the call
        was already counted as a success, so that success becomes a failure
        (one call, one outcome); with no success left in the window, it is a
        failure of its own.
        """
        outcomes = self._outcomes
        if outcomes is None or not self.accepting or not outcomes.amend(now):
            self.failure(now)
        else:
            self._check_rate(now)

    def _check_rate(self, now: float) -> None:
        outcomes = self._outcomes
        rate = self.policy.failure_rate
        assert outcomes is not None  # noqa: S101 - the rate rule
        assert rate is not None  # noqa: S101
        # A division, not failures >= rate * calls: 0.28 * 25 is 7.000000000000001.
        if (
            outcomes.calls >= self.policy.minimum_calls
            and outcomes.failures / outcomes.calls >= rate
        ):
            self._trip(now)

    def new_clock(self, now: float) -> None:
        """The times so far were read on another clock (another ``trio.run``).

        A module-level guard outlives a Trio run, and each run's clock has its
        own offset, so how long ago anything happened is unknown: a retry
        wait is over (the next call is the one trial), and the failures
        counted are kept as if they happened ``now``.
        """
        self.retry_at = None
        self._failure_times = deque([now] * len(self._failure_times))
        if self._outcomes is not None:
            self._outcomes.rebase(now)

    def success(self, now: float) -> None:
        """A call succeeded; only the rate rule needs to know."""
        if self._outcomes is not None and self.accepting:
            self._outcomes.add(now, failed=False)

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
        self._clear_counts()
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
            wait = self.retry_wait * self.policy.retry_backoff
            self.retry_wait = wait if cap is None else min(wait, cap)
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
        if passed is None or self.state is not State.OFF:
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

    def reset(self, now: float) -> None:  # noqa: ARG002
        """Forget the failures; when OFF (forced or not), attempt now."""
        if self.state is State.STOPPED:
            return
        self._clear_counts()
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

    def _clear_counts(self) -> None:
        self._failure_times.clear()
        if self._outcomes is not None:
            self._outcomes.clear()

    def _forget_trial(self) -> None:
        self.trial = None
        self.trials_passed = 0

    def _arm(self, now: float) -> None:
        wait = self.retry_wait
        jitter = self.policy.retry_jitter
        if jitter:
            wait *= 1 + jitter * (2 * self.rng.random() - 1)
        self.retry_at = now + wait
