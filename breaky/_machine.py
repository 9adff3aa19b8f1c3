"""The circuit breaker's decisions, with no I/O and no Trio (the sans-I/O core).

A :class:`Machine` is told what happened (a start succeeded or failed, the
resource crashed, someone reported a failure, time passed, a command came) and
the time it happened; it updates its state, the failures it counts and its one
retry deadline. The Trio plumbing around it reads those to know what to do
next, and reacts to the state changes it sees.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from ._policy import Policy


class State(enum.Enum):
    """The state of a circuit breaker.

    - ``STARTING``: the first start has not settled; calls are queued for it
      (and answered OFF if every attempt fails).
    - ``ON``: the resource runs, or is being restarted after a crash; calls are
      queued for it.
    - ``OFF``: too many failures; calls are answered :data:`breaky.OFF` at once,
      and starts are tried at the policy's retry rate until one succeeds.
    - ``FORCED_OFF``: turned OFF by :meth:`~breaky.CircuitBreaker.force_off`;
      calls are answered OFF and nothing is tried until
      :meth:`~breaky.CircuitBreaker.reset`.
    - ``STOPPED``: the breaker was stopped; calls are answered OFF.
    """

    STARTING = "starting"
    ON = "on"
    OFF = "off"
    FORCED_OFF = "forced off"
    STOPPED = "stopped"


class Hold(enum.Enum):
    """What a fleet says of this instance's breaker (see :mod:`breaky._fleet`).

    - ``NONE``: no fleet holds it; the local rules alone apply.
    - ``HELD``: the fleet holds it OFF and another instance probes: no timer,
      no attempt.
    - ``PROBER``: the fleet holds it OFF and this instance probes, at the
      policy's retry rate.
    """

    NONE = "none"
    HELD = "held"
    PROBER = "prober"


# The longest random delay before the start that fleet ON asks of each held
# instance: the fleet's instances reconnect within half a second, not all in
# the same millisecond.
FLEET_ON_SPREAD = 0.5


@final
@attrs.define
class Machine:
    """The pure state machine of one breaker.

    Every input takes ``now`` (seconds on Trio's clock) and returns nothing:
    the caller compares :attr:`state` before and after to see a transition.
    ``retry_at`` is not ``None`` exactly when the breaker is OFF and waiting to
    retry, so there is never more than one retry timer. While a fleet holds it
    OFF (``hold`` is ``HELD``) there is no timer and nothing is tried.
    """

    policy: Policy
    state: State = State.STARTING
    retry_at: float | None = None
    # What the fleet, if any, says of this breaker.
    hold: Hold = Hold.NONE
    # OFF by its own failures (a trip, or a failed attempt while no fleet
    # held it), not only because a fleet holds it: what a fleet reports.
    sees_off: bool = False
    # The wait before the next attempt while OFF, before jitter.
    retry_wait: float = attrs.field(init=False)
    # The jitter's random source: the policy's, or the breaker's own.
    rng: random.Random = attrs.field(init=False)
    # When each counted failure happened, oldest first.
    _failure_times: deque[float] = attrs.field(init=False, factory=deque[float])

    def __attrs_post_init__(self) -> None:
        self.retry_wait = self.policy.retry_timeout
        self.rng = self.policy.rng or random.Random()  # noqa: S311 - not crypto

    @property
    def failures(self) -> int:
        """The failures counted, as of the last input."""
        return len(self._failure_times)

    @property
    def accepting(self) -> bool:
        """Whether calls are queued for the resource (else answered OFF)."""
        return self.state is State.ON or self.state is State.STARTING

    @property
    def wants_start(self) -> bool:
        """Whether a resource instance should be started now."""
        return self.accepting or (
            self.state is State.OFF
            and self.retry_at is None
            and self.hold is not Hold.HELD
        )

    def count(self, now: float) -> int:
        """Return the failures that count at ``now`` (a window forgets)."""
        window = self.policy.failure_window
        times = self._failure_times
        if window is not None:
            while times and times[0] <= now - window:
                times.popleft()
        return len(times)

    def started(self, now: float) -> None:  # noqa: ARG002 - every input has a time
        """A resource instance called ``task_status.started()``."""
        if not self.wants_start:
            return  # a dismissed instance, too late: stopped, or OFF and waiting
        if self.state is not State.ON:
            # Turning ON (first start or recovery) starts a fresh count.
            self._failure_times.clear()
            self.retry_wait = self.policy.retry_timeout
            self.state = State.ON
            self.sees_off = False

    def start_failed(self, now: float) -> None:
        """A resource instance ended before calling ``started()``."""
        if self.state is State.OFF:
            # An attempt failed: stay OFF and wait longer (the backoff).
            cap = self.policy.max_retry_timeout
            wait = self.retry_wait * self.policy.retry_backoff
            self.retry_wait = wait if cap is None else min(wait, cap)
            self._arm(now)
            if self.hold is Hold.NONE:
                self.sees_off = True  # still failing, as seen from here
        else:
            self._count(now)

    def crashed(self, now: float) -> None:
        """A started resource instance ended (raised, or returned while serving)."""
        self._count(now)

    def failure(self, now: float) -> None:
        """A failure was reported: ``failure()``, a timeout, a slow call..."""
        self._count(now)

    def retry_due(self, now: float) -> None:
        """Time passed; if the retry deadline is reached, a start is wanted."""
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None

    def force_off(self, now: float) -> None:  # noqa: ARG002
        """Turn OFF until :meth:`reset`, whatever the failures."""
        if self.state is not State.STOPPED:
            self.state = State.FORCED_OFF
            self.retry_at = None
            self.sees_off = False

    def reset(self, now: float) -> None:  # noqa: ARG002
        """Forget the failures; when OFF (forced or not), want a start now."""
        if self.state is State.STOPPED:
            return
        self._failure_times.clear()
        self.retry_wait = self.policy.retry_timeout
        # A manual override: this instance tries now, whatever its fleet says
        # (until the fleet's state next changes).
        self.hold = Hold.NONE
        self.sees_off = False
        if self.state is State.OFF or self.state is State.FORCED_OFF:
            self.state = State.OFF
            self.retry_at = None

    def stop(self) -> None:
        """The breaker was asked to stop; nothing is started after this."""
        self.state = State.STOPPED
        self.retry_at = None
        self.hold = Hold.NONE
        self.sees_off = False

    # What a fleet says. Each is idempotent: saying it again changes nothing.

    def fleet_off(self, now: float) -> None:
        """The fleet holds the breaker OFF and another instance probes."""
        self._held(now, Hold.HELD)

    def fleet_probe(self, now: float) -> None:
        """The fleet holds the breaker OFF and this instance probes."""
        self._held(now, Hold.PROBER)

    def fleet_on(self, now: float) -> None:
        """The fleet no longer holds it OFF: start soon, at a random moment."""
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
            if hold is Hold.PROBER:
                self._arm(now)
        elif hold is Hold.HELD:
            self.retry_at = None  # an attempt under way is dismissed
        elif old is Hold.HELD:
            self._arm(now)  # the new prober waits one retry period first

    def _count(self, now: float) -> None:
        if not self.accepting:
            return  # failures while OFF or STOPPED change nothing
        self._failure_times.append(now)
        if self.count(now) >= self.policy.failure_threshold:
            self.state = State.OFF
            self.retry_wait = self.policy.retry_timeout
            self._arm(now)
            self.sees_off = True

    def _arm(self, now: float) -> None:
        wait = self.retry_wait
        jitter = self.policy.retry_jitter
        if jitter:
            wait *= 1 + jitter * (2 * self.rng.random() - 1)
        self.retry_at = now + wait
