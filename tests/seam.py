"""The one test seam: what a breaker keeps inside, for the few tests that check it.

Every other test reads breakers through their public views (``state``,
``statistics()``, ``in_flight``, ``subscribe()``, :mod:`breaky.testing`) or
plays a fleet through the fleet seam (:class:`support.LinkOnly`). A few tests
check invariants that no public view shows, and read them here, in one place:

- the model tests (``test_model.py``, ``test_model_guard.py``) compare the
  machine's retry time, fleet hold, trial and report flag, a resource
  breaker's one retry timer and a guard's bulkhead with a model, and feed a
  standalone guard what a fleet says (its :class:`Member`);
- the fleet tests (``fleet_nodes.py``, ``test_fleet.py``,
  ``test_fleet_scale.py``) ask which instance holds the probe lease (the
  hold: a breaker already OFF shows no change when it becomes the prober);
- ``test_breaker.py`` checks that answered calls leave no deadline behind
  (memory, not behaviour).
"""

# SEAM: the only private reaches of the tests into breaky's core and kinds
# (each ``noqa: SLF001`` below, and none elsewhere but test_fleet_unit.py's,
# listed there). The core is to offer them as one read-only snapshot per
# breaker, and the Member of a breaker; then this module reads those instead,
# and no test changes.

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import attrs

import breaky
from breaky._core.fleet import Member

if TYPE_CHECKING:
    from breaky._core.machine import Hold

__all__ = ["Inside", "inside", "member"]


@final
@attrs.frozen
class Inside:
    """A breaker's internals, now.

    Attributes:
        hold: what a fleet says of it (``NONE``, ``HELD``, ``PROBER``).
        sees_off: whether it is OFF by its own failures (what a fleet counts).
        retry_at: when its next attempt is due, if one is.
        trial: whether a trial (a guard's trial call) is under way.
        trials_passed: trial calls passed since it turned OFF.
        retry_timer: a resource breaker's one retry wait: its deadline
            (``inf`` while parked), ``None`` when it is not waiting; always
            ``None`` for a guard.
        places: a guard's bulkhead: (places taken, calls waiting in line);
            ``None`` without one, and for a resource breaker.
        deadlines: the call deadlines a resource breaker keeps (0 for a guard).

    """

    hold: Hold
    sees_off: bool
    retry_at: float | None
    trial: bool
    trials_passed: int
    retry_timer: float | None
    places: tuple[int, int] | None
    deadlines: int


def inside(breaker: breaky.CircuitBreaker[Any, Any] | breaky.Guard) -> Inside:
    """What ``breaker`` keeps inside, now."""
    machine = breaker._core.machine  # noqa: SLF001 - SEAM: the core's machine
    retry_timer = places = None
    deadlines = 0
    if isinstance(breaker, breaky.Guard):
        bulkhead = breaker._places  # noqa: SLF001 - SEAM: the guard's bulkhead
        if bulkhead is not None:
            limit = breaker.policy.max_concurrent
            assert limit is not None
            free = bulkhead._free  # noqa: SLF001 - SEAM
            places = (limit - free, len(bulkhead._waiting))  # noqa: SLF001 - SEAM
    else:
        waiting = breaker._waiting  # noqa: SLF001 - SEAM: the one retry timer
        retry_timer = None if waiting is None else waiting.deadline
        mailbox = breaker._mailbox  # noqa: SLF001 - SEAM: the call deadlines
        deadlines = len(mailbox._deadlines)  # noqa: SLF001 - SEAM
    return Inside(
        hold=machine.hold,
        sees_off=machine.sees_off,
        retry_at=machine.retry_at,
        trial=machine.trial is not None,
        trials_passed=machine.trials_passed,
        retry_timer=retry_timer,
        places=places,
        deadlines=deadlines,
    )


def member(breaker: breaky.CircuitBreaker[Any, Any] | breaky.Guard) -> Member:
    """The breaker as a fleet sees it, for a breaker that is in no supervisor.

    (One in a supervisor is reached through the fleet seam instead: see
    :class:`support.LinkOnly`.)
    """
    return Member(breaker._core)  # noqa: SLF001 - SEAM: the breaker's core
