"""The one test seam: what no public view of a breaker shows.

breaky's own model-based tests compare a breaker with a model after every
step: its retry deadline, what a fleet says of it, its trial, its line.
:func:`breaky.testing.internals` gives them that through each kind's
``__breaky_internals__()``; nothing else in breaky reads it, and it makes no
promise of stability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from breaky._core.fleet import Link, Member
    from breaky._core.states import Hold


@final
@attrs.frozen(kw_only=True)
class Internals:
    """A snapshot of one breaker's internals, for tests.

    Attributes:
        retry_at: when the next attempt is due while OFF (the one retry
            timer), or ``None``.
        hold: what a fleet says of it (:class:`~breaky._core.states.Hold`).
        sees_off: whether it is OFF by its own failures (what a fleet counts).
        trial: whether a guard's trial call is in flight.
        trials_passed: the trials that passed since it last turned OFF.
        failures: the failures counted as of the last input.
        member: the breaker as a fleet sees it (to tell it what a fleet says).
        taken: the places of its line taken now (``None``: it has no line).
        waiting: the calls waiting in its line for a place.
        timer: the deadline of a resource breaker's wait for its next attempt
            (``None`` while it does not wait).
        deadlines: the call deadlines a resource breaker keeps.
        keys: a keyed group's live breakers, least recently used first.
        link: a supervisor's breakers, as its fleet sees them.

    """

    retry_at: float | None = None
    hold: Hold | None = None
    sees_off: bool = False
    trial: bool = False
    trials_passed: int = 0
    failures: int = 0
    member: Member | None = None
    taken: int | None = None
    waiting: int = 0
    timer: float | None = None
    deadlines: int = 0
    keys: tuple[object, ...] = ()
    link: Link | None = None
