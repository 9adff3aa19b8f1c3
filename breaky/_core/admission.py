"""The words of a call's two moments: what admission says, how a call ended.

:meth:`~breaky._core.core.Core.admit` answers a :class:`Verdict` (or a
:class:`Trial` while OFF); :meth:`~breaky._core.core.Core.ended` takes an
:class:`Outcome`. Each outcome is counted once, in one counter, so that the
calls made are always the outcomes plus the calls pending.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, cast, final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaky._core.policy import Policy
    from breaky._core.statistics import Totals

from breaky._core.policy import Kind


class Verdict(enum.Enum):
    """What :meth:`Core.admit` says of a call (but a trial)."""

    CALL = "call"  # run now; there is no line
    PLACED = "placed"  # run now, holding a place in the line
    WAIT = "wait"  # wait in line for a place (Core.wait_for_place)
    OFF = "off"  # not serving: answer OFF
    SHED = "shed"  # too many waiting: answer OFF (load shedding)


CALL, PLACED, WAIT, OFF, SHED = Verdict


@final
@attrs.frozen
class Trial:
    """Admitted as the one trial call while OFF; its ticket names it."""

    ticket: int


Admission = Verdict | Trial


class Outcome(enum.Enum):
    """How an admitted call ended: each is counted once, in one counter."""

    REPLY = "reply"  # it returned (judged: slow?)
    ERROR = "error"  # it raised (judged: a failure? slow?)
    WRONG_CALL = "wrong call"  # it could not be called: counted, never judged
    TIMEOUT = "timeout"  # it ran past its timeout: a failure
    LINE_TIMEOUT = "line timeout"  # timed out, having waited in line: no failure
    CANCELLED = "cancelled"  # its caller was cancelled: never a failure
    TURNED_AWAY = "turned away"  # never ran: answered OFF
    SHED = "shed"  # never ran: its wait in line reached its timeout


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


async def answer_off(totals: Totals, verdict: Verdict) -> None:
    """A call is answered OFF (``OFF`` or ``SHED``) after one checkpoint.

    Counted as such once the checkpoint is passed; a caller cancelled in it
    got ``Cancelled``, and is counted so.
    """
    try:
        await trio.lowlevel.checkpoint()
    except BaseException:
        totals.cancelled += 1
        raise
    if verdict is SHED:
        totals.shed += 1
    else:
        totals.off += 1


async def refuse_call(totals: Totals) -> None:
    """A call refused before any breaker could admit it: counted, then OFF."""
    totals.calls += 1
    await answer_off(totals, Verdict.OFF)
