"""What a fleet knows between round trips with Redis, and what is left to do.

Pure: no Trio, no I/O. The protocol (:mod:`.protocol`) reads and updates it;
nothing else does.
"""

from __future__ import annotations

import itertools
from typing import final

import attrs

from breaky._core.fleet import View

__all__ = ["Tracker"]


@final
@attrs.define(eq=False)
class Tracker:
    """What a fleet knows between round trips with Redis, and what is to do.

    Three queues of breaker names, drained in this order: ``leases`` (the
    leases this instance holds, due for renewal), ``dirty`` (a state change
    here, or an announcement) and ``routine`` (the period's renewals of
    reports and polls of held breakers). Dicts: insertion order, no repeats.
    """

    leases: dict[str, None] = attrs.field(factory=dict[str, None])
    dirty: dict[str, None] = attrs.field(factory=dict[str, None])
    routine: dict[str, None] = attrs.field(factory=dict[str, None])
    # Breakers whose start succeeded after OFF, not yet told to Redis.
    recovered: set[str] = attrs.field(factory=set[str])
    # What each breaker was last told, if not ON: it is told only changes.
    told: dict[str, View] = attrs.field(factory=dict[str, View])
    # Breakers whose report (as far as this instance knows) Redis holds.
    reported: set[str] = attrs.field(factory=set[str])
    # Breakers OFF here when last synced: polled each period, so that one
    # that turns OFF by its own failures with no change of state (a failed
    # attempt after the fleet let it go) reports so.
    offs: set[str] = attrs.field(factory=set[str])
    # Why the fleet turned ON, from its announcement, per breaker.
    on_reasons: dict[str, str] = attrs.field(factory=dict[str, str])
    # Each breaker's keys and hash slot, worked out once.
    keys: dict[str, tuple[list[str], int]] = attrs.field(
        factory=dict[str, tuple[list[str], int]]
    )
    # The heartbeat is due (at each period, and at the start of a session).
    beat_due: bool = True
    closing: bool = False

    def mark(self, *names: str) -> None:
        """Sync these breakers soon: something changed."""
        self.dirty.update(dict.fromkeys(names))

    def renew_leases(self) -> None:
        """The leases this instance holds are due for renewal."""
        self.leases.update(
            dict.fromkeys(n for n, v in self.told.items() if v is View.PROBE)
        )

    def period(self) -> None:
        """A new period: the heartbeat, leases, reports and held breakers."""
        self.beat_due = True
        self.renew_leases()
        self.routine.update(dict.fromkeys(self.reported))
        self.routine.update(
            dict.fromkeys(n for n, v in self.told.items() if v is View.OFF)
        )
        self.routine.update(dict.fromkeys(self.offs))

    @property
    def pending(self) -> bool:
        """Whether a round trip has something to do."""
        return bool(self.beat_due or self.leases or self.dirty or self.routine)

    def take(self, limit: int) -> tuple[list[str], int]:
        """Up to ``limit`` names, leases first, then changes, then routine.

        Also how many of them (the first ones) came from leases or changes.
        """
        names: dict[str, None] = {}
        urgent = 0
        for queue in (self.leases, self.dirty, self.routine):
            if queue is self.routine:
                urgent = len(names)
            # One pass over the queue's front (taking names one by one from
            # a dict's front is quadratic: its holes are walked again).
            for name in list(itertools.islice(queue, limit - len(names))):
                names[name] = None
                for each in (self.leases, self.dirty, self.routine):
                    each.pop(name, None)  # one sync covers them all
        return list(names), urgent

    def forget(self, name: str) -> None:
        """The breaker is gone: everything kept for it goes too."""
        self.told.pop(name, None)
        self.reported.discard(name)
        self.recovered.discard(name)
        self.offs.discard(name)
        self.on_reasons.pop(name, None)
        self.keys.pop(name, None)

    def size(self) -> int:
        """How many entries it keeps, all breakers together (queues included)."""
        kept = (self.leases, self.dirty, self.routine, self.recovered, self.told)
        more = (self.reported, self.offs, self.on_reasons, self.keys)
        return sum(map(len, kept)) + sum(map(len, more))

    def close(self) -> None:
        """The supervisor closes: leave once what is queued is synced."""
        self.closing = True
