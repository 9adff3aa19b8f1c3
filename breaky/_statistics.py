"""Counts of what happened to a breaker, and the frozen snapshot users see."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from ._machine import State


@attrs.define
class Totals:
    """The running counts; updated in place on the request path."""

    calls: int = 0
    replies: int = 0
    errors: int = 0
    off: int = 0
    shed: int = 0
    timeouts: int = 0
    lost: int = 0
    cancelled: int = 0
    slow_calls: int = 0
    casts: int = 0
    crashes: int = 0
    failed_starts: int = 0
    restarts: int = 0
    trips: int = 0
    retries: int = 0


@final
@attrs.frozen
class BreakerStatistics:
    """A snapshot of one breaker, from :meth:`~breaky.CircuitBreaker.statistics`.

    Every call made is exactly one of: replied, errored (``request.fail()``),
    answered OFF, shed, timed out, lost, cancelled by its caller, or still
    pending, so ``calls == replies + errors + off + shed + timeouts + lost +
    cancelled + pending``.

    Attributes:
        state: the breaker's state.
        failures: the failures that count toward the threshold now.
        pending: calls not answered yet (queued, or held by the resource).
        calls: calls made.
        replies: calls answered with ``request.reply()``.
        errors: calls answered with ``request.fail()``.
        off: calls answered :data:`~breaky.OFF` because the breaker was not
            serving (OFF, forced OFF or stopped).
        shed: calls answered :data:`~breaky.OFF` because ``max_queued``
            requests were already waiting (load shedding).
        timeouts: calls answered :class:`~breaky.CallTimeout`.
        lost: calls answered :class:`~breaky.ResourceLost`.
        cancelled: calls withdrawn because their caller was cancelled.
        slow_calls: calls answered later than ``slow_call_duration``.
        casts: casts queued (a cast answered OFF is not counted).
        crashes: started resource instances that ended on their own.
        failed_starts: start attempts that failed.
        restarts: starts made at once after a crash or failed start.
        trips: times the breaker turned OFF on failures.
        retries: start attempts made while OFF.

    """

    state: State
    failures: int
    pending: int
    calls: int
    replies: int
    errors: int
    off: int
    shed: int
    timeouts: int
    lost: int
    cancelled: int
    slow_calls: int
    casts: int
    crashes: int
    failed_starts: int
    restarts: int
    trips: int
    retries: int
