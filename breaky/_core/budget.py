"""The attempt budget: how many extra attempts a guard may make now.

Extra attempts (re-attempts and hedges) are what turns a struggling
dependency's trouble into an outage: every failure asks for more load. The
budget bounds them as Finagle's retry budget does: over the last
:data:`WINDOW` seconds, the extra attempts made are at most ``share`` times
the calls made (their first attempts) plus ``per_second`` times the window,
a floor that lets a quiet guard re-attempt a rare failure.

It is pure (no clock, no Trio): the caller passes the time. Time is kept in
:data:`SLICES` slices of the window, as the rate rule keeps outcomes:
whenever an extra attempt is allowed at ``now``, the extra attempts made in
the ``WINDOW`` seconds up to ``now`` are at most ``share`` times the calls
made in those seconds, plus the floor.

Calls are counted by the caller in :attr:`Budget.firsts`: one increment and
no clock on the call path. The budget puts the calls counted since its last
look into the slice of that look, the earliest moment they can have been
made, so that they leave the window no later than they should: never more
extra attempts than the rule allows, and fewer only after a quiet spell
(the first failure after it finds the floor alone).
"""

from __future__ import annotations

import math
from typing import final

# Seconds over which extra attempts are weighed against calls (Finagle's 10).
WINDOW = 10.0
# The window's slices: an outcome leaves it within a twentieth of its age.
SLICES = 20
_WIDTH = WINDOW / SLICES
# Extra attempts are kept one slice longer than calls: the calls counted are
# all within the last WINDOW seconds, and the extra attempts of the last
# WINDOW seconds are all counted, so the rule holds over the exact window.
_EXTRA_SLICES = SLICES + 1


@final
class Budget:
    """Extra attempts allowed: ``share`` of the calls plus ``per_second``."""

    __slots__ = ("_calls", "_extras", "_floor", "_seen", "_share", "_slice", "firsts")

    def __init__(self, share: float, per_second: float) -> None:
        # Calls made so far (their first attempts): the caller adds to it.
        self.firsts = 0
        self._share = share
        self._floor = per_second * WINDOW
        # Calls and extra attempts per slice, a ring indexed by slice number.
        self._calls = [0] * SLICES
        self._extras = [0] * _EXTRA_SLICES
        self._seen = 0  # calls already put in a slice
        self._slice: int | None = None  # the slice of the last look

    def withdraw(self, now: float) -> bool:
        """Take one extra attempt at ``now``: ``True`` if allowed (then counted)."""
        here = self._look(now)
        if sum(self._extras) + 1 > self._share * sum(self._calls) + self._floor:
            return False
        self._extras[here % _EXTRA_SLICES] += 1
        return True

    def allowed(self, now: float) -> float:
        """Extra attempts still allowed at ``now`` (a count, maybe fractional)."""
        self._look(now)
        return self._share * sum(self._calls) + self._floor - sum(self._extras)

    def _look(self, now: float) -> int:
        """Bring the slices up to ``now``; return the slice ``now`` is in."""
        here = math.floor(now / _WIDTH)
        last = self._slice
        new, self._seen = self.firsts - self._seen, self.firsts
        if last is None or here < last:
            # The first look, or another clock (a new Trio run): the calls
            # counted so far cannot be placed, and nothing kept is current.
            self._calls = [0] * SLICES
            self._extras = [0] * _EXTRA_SLICES
        else:
            self._calls[last % SLICES] += new
            # The slices that passed since are emptied for their new turn
            # (the calls put in just now too, once the window has left them).
            for passed in range(last + 1, min(here, last + _EXTRA_SLICES) + 1):
                self._calls[passed % SLICES] = 0
                self._extras[passed % _EXTRA_SLICES] = 0
        self._slice = here
        return here
