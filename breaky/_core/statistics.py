"""What a breaker counts, declared once, and the frozen snapshot users see.

:class:`Counts` declares every counter with what it counts and its unit; the
running :class:`Totals` and the :class:`BreakerStatistics` snapshot both
inherit it, and the metrics exporters read the same declarations, so a new
counter is written in one place.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from breaky._core.states import State


def _counter(text: str, unit: str, outcome: str | None = None) -> int:
    """A counter field: ``outcome`` names a way a call can end, if it is one."""
    return attrs.field(
        default=0, metadata={"help": text, "unit": unit, "outcome": outcome}
    )


@attrs.define
class Counts:
    """Every counter of a breaker; both kinds count the same things.

    A call ends exactly one way: the fields with an ``outcome`` in their
    metadata, so that those plus the calls pending add up to the calls made.
    """

    calls: int = _counter("Calls made.", "{call}")
    replies: int = _counter(
        "Calls answered with a reply (a guarded call returned).", "{call}", "reply"
    )
    errors: int = _counter(
        "Calls answered with an exception (request.fail(), or raised by a "
        "guarded call), whether it counted as a failure or not.",
        "{call}",
        "error",
    )
    off: int = _counter(
        "Calls answered OFF because the breaker was not serving.", "{call}", "off"
    )
    shed: int = _counter(
        "Calls answered OFF because too many were waiting (load shedding).",
        "{call}",
        "shed",
    )
    timeouts: int = _counter("Calls answered CallTimeout.", "{call}", "timeout")
    lost: int = _counter(
        "Calls answered ResourceLost (the resource ended while holding them).",
        "{call}",
        "lost",
    )
    cancelled: int = _counter(
        "Calls whose caller was cancelled before their answer.", "{call}", "cancelled"
    )
    slow_calls: int = _counter(
        "Calls answered later than the policy's slow_call_duration.", "{call}"
    )
    casts: int = _counter(
        "Casts queued (a cast answered OFF is not counted).", "{cast}"
    )
    crashes: int = _counter(
        "Started resource instances that ended on their own.", "{crash}"
    )
    failed_starts: int = _counter("Start attempts that failed.", "{start}")
    restarts: int = _counter(
        "Starts made at once after a crash or a failed start.", "{restart}"
    )
    trips: int = _counter(
        "Times the breaker turned OFF on its own failures (not on a fleet's word).",
        "{trip}",
    )
    retries: int = _counter(
        "Attempts made while OFF: starts of a resource, trial calls of a guard.",
        "{retry}",
    )
    fleet_holds: int = _counter(
        "Times a fleet turned the breaker OFF on other instances' word.", "{hold}"
    )
    reattempts: int = _counter(
        "A guard's attempts made after a failed attempt of the same call.",
        "{attempt}",
    )
    hedges: int = _counter(
        "A guard's attempts started by hedge_after while another still ran.",
        "{attempt}",
    )
    attempts_denied: int = _counter(
        "Extra attempts wanted but not made: the attempt budget was spent, "
        "the guard was not ON, or the caller's deadline was too near.",
        "{attempt}",
    )


@attrs.define
class Totals(Counts):
    """The running counts; updated in place on the call path."""

    def answered(self) -> int:
        """The calls that have had their one answer, of every kind."""
        return sum(_answers(self))

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these (a group keeps a forgotten key's)."""
        for name in _NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


# (name, help, unit, outcome) of every counter, in declaration order.
COUNTERS: tuple[tuple[str, str, str, str | None], ...] = tuple(
    (f.name, f.metadata["help"], f.metadata["unit"], f.metadata["outcome"])
    for f in attrs.fields(Counts)
)
_NAMES = tuple(name for name, *_ in COUNTERS)
# The counters of the ways a call ends, read in one go.
_answers = operator.attrgetter(
    *(name for name, _, _, outcome in COUNTERS if outcome is not None)
)


# attrs freezes a subclass of a mutable class (its __setattr__ refuses every
# field); dataclass rules, which pyright applies, do not allow it.
@final
@attrs.frozen(kw_only=True)  # pyright: ignore[reportGeneralTypeIssues]
class BreakerStatistics(Counts):
    """A snapshot of one breaker or guard, from its ``statistics()``.

    Every call made is exactly one of: replied, errored, answered OFF, shed,
    timed out, lost, cancelled by its caller, or still pending, so ``calls ==
    replies + errors + off + shed + timeouts + lost + cancelled + pending``.
    A guard counts each attempt of a call (its re-attempts and hedges) as one
    call: the calls its callers made are ``calls - reattempts - hedges``.

    Attributes:
        state: the breaker's state.
        failures: the failures that count toward the failure rule now.
        pending: calls not answered yet (queued or held by the resource; for
            a guard, running or waiting for a place).
        next_attempt_at: while OFF and waiting, when the next attempt (a
            start, a trial call) is due, on Trio's clock
            (:func:`trio.current_time`); ``None`` otherwise (ON, due now, held
            OFF by a fleet, forced OFF).
        last_failure_at: when the last failure was counted (a call, a crash,
            a failed attempt), on Trio's clock; ``None`` if none yet.
        calls: calls made.
        replies: calls answered with ``request.reply()``; for a guard, calls
            whose function returned.
        errors: calls answered with ``request.fail()``; for a guard, calls
            whose function raised (counted as a failure or not).
        off: calls answered :data:`~breaky.OFF` because the breaker was not
            serving (OFF, forced OFF, stopped, or a guard's trial in flight).
        shed: calls answered :data:`~breaky.OFF` because ``max_queued``
            requests were already waiting (load shedding).
        timeouts: calls answered :class:`~breaky.CallTimeout`.
        lost: calls answered :class:`~breaky.ResourceLost` (never for a guard).
        cancelled: calls withdrawn because their caller was cancelled.
        slow_calls: calls answered later than ``slow_call_duration``.
        casts: casts queued (a cast answered OFF is not counted).
        crashes: started resource instances that ended on their own.
        failed_starts: start attempts that failed.
        restarts: starts made at once after a crash or failed start.
        trips: times the breaker turned OFF on its own failures; a fleet
            holding it OFF is not a trip.
        retries: attempts made while OFF: starts of a resource breaker,
            trial calls of a guard.
        fleet_holds: times a fleet turned the breaker OFF on the word of
            other instances (not a trip of its own).
        concurrency_limit: how many calls may run at once now: a guard's
            ``max_concurrent`` (learned, if it is :class:`~breaky.Adaptive`),
            or the ``concurrency`` of a resource's :meth:`~breaky.Inbox.serve`
            (summed if several serve at once); ``None`` with no limit.
        reattempts: a guard's attempts made after a failed attempt of the
            same call (each is counted in ``calls`` too, and answered as a
            call is).
        hedges: a guard's attempts started by ``hedge_after`` while another
            attempt of the same call still ran (counted in ``calls`` too; one
            cancelled because another answered first counts ``cancelled``).
        attempts_denied: extra attempts a guard's call wanted but did not
            make: the attempt budget was spent, the guard was not ON, or the
            wait would have ended after the caller's deadline.

    """

    state: State
    failures: int
    pending: int
    next_attempt_at: float | None = None
    last_failure_at: float | None = None
    concurrency_limit: int | None = None


# attrs freezes a subclass of a mutable class; see BreakerStatistics.
@final
@attrs.frozen(kw_only=True)  # pyright: ignore[reportGeneralTypeIssues]
class KeyedStatistics(Counts):
    """A snapshot of a keyed group, from its ``statistics()``.

    The counters (``calls``, ``replies``, ``off``, ... as in
    :class:`~breaky.BreakerStatistics`) are totals over every key the group
    ever had, forgotten ones included, so they only grow; a call refused at
    the ``max_keys`` bound counts in ``calls``, ``off`` and ``refused``.

    Attributes:
        keys: the keys alive now.
        states: how many live keys are in each :class:`~breaky.State` (every
            state is present, most often with 0).
        failures: the failures counted now, summed over the live keys.
        pending: the calls not answered yet, summed over the live keys.
        forgotten: keys forgotten so far (idle, or evicted at the bound).
        refused: new keys refused at the ``max_keys`` bound because no live
            key could be forgotten (their calls were answered OFF).
        not_on: the statistics of each live key that is not ON, by key.
        concurrency_limit: the keys' concurrency limits now, summed over the
            live keys that have one (each key learns its own when it is
            :class:`~breaky.Adaptive`); ``None`` when none has a limit.

    """

    keys: int
    states: Mapping[State, int]
    failures: int
    pending: int
    forgotten: int
    refused: int
    not_on: Mapping[str, BreakerStatistics]
    concurrency_limit: int | None = None
