"""The circuit breaker's decisions, with no I/O and no Trio (the sans-I/O core).

A :class:`Machine` is told what happened (a start succeeded or failed, the
resource crashed, someone reported a failure, time passed, a stop was asked
for) and the time it happened; it updates its state, its failure count and
its one retry deadline. The Trio plumbing around it reads those three fields to
know what to do next, and reacts to the state changes it reports.
"""

from __future__ import annotations

import enum
from typing import final

import attrs


class State(enum.Enum):
    """The state of a circuit breaker.

    - ``STARTING``: the first start has not settled; calls are queued for it
      (and answered OFF if every attempt fails).
    - ``ON``: the resource runs, or is being restarted after a crash; calls are
      queued for it.
    - ``OFF``: too many failures; calls are answered :data:`breaky.OFF` at once,
      and a start is tried every ``retry_timeout`` seconds.
    - ``STOPPED``: the breaker was stopped; calls are answered ``OFF``.
    """

    STARTING = "starting"
    ON = "on"
    OFF = "off"
    STOPPED = "stopped"


@final
@attrs.define
class Machine:
    """The pure state machine of one breaker.

    Every method takes ``now`` (seconds on Trio's clock) and returns nothing:
    the caller compares :attr:`state` before and after to see a transition.
    ``retry_at`` is not ``None`` exactly when the breaker is OFF and waiting to
    retry, so there is never more than one retry timer.
    """

    failure_threshold: int
    retry_timeout: float
    state: State = State.STARTING
    failures: int = 0
    retry_at: float | None = None

    @property
    def accepting(self) -> bool:
        """Whether calls are queued for the resource (else answered OFF)."""
        return self.state is State.ON or self.state is State.STARTING

    @property
    def wants_start(self) -> bool:
        """Whether a resource instance should be started now."""
        return self.accepting or (self.state is State.OFF and self.retry_at is None)

    def started(self, now: float) -> None:  # noqa: ARG002 - every input has a time
        """A resource instance called ``task_status.started()``."""
        if not self.wants_start:
            return  # a dismissed instance, too late: stopped, or OFF and waiting
        if self.state is not State.ON:
            # Turning ON (first start or recovery) starts a fresh count.
            self.failures = 0
            self.state = State.ON

    def start_failed(self, now: float) -> None:
        """A resource instance ended before calling ``started()``."""
        if self.state is State.OFF:
            # A retry failed: stay OFF and wait a full period again.
            self.retry_at = now + self.retry_timeout
        else:
            self._count(now)

    def crashed(self, now: float) -> None:
        """A started resource instance ended (raised, or returned while serving)."""
        self._count(now)

    def failure(self, now: float) -> None:
        """A failure was reported (``failure()`` or a call timeout)."""
        self._count(now)

    def retry_due(self, now: float) -> None:
        """Time passed; if the retry deadline is reached, a start is wanted."""
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None

    def stop(self) -> None:
        """The breaker was asked to stop; nothing is started after this."""
        self.state = State.STOPPED
        self.retry_at = None

    def _count(self, now: float) -> None:
        if not self.accepting:
            return  # OFF and STOPPED ignore failures: nothing is serving
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.state = State.OFF
            self.retry_at = now + self.retry_timeout
