"""The fleet's sync protocol with Redis, sans I/O (in h11's style).

Pure and synchronous: no Trio, no coredis, no I/O, no clock of its own. It is
told what happened (a breaker's state changed, an announcement was heard, a
session with Redis began or ended, the time is ``now``) and what Redis
answered; it says what to send next (a :class:`~.messages.Round`: the
heartbeat and the script calls of :mod:`.scripts`) and what to tell each
breaker (a :class:`~.messages.Tell`: OFF, PROBE, ON or LOST). The transport
(:mod:`.transport` and :mod:`.session`) does the talking and applies the
tells.

It sees breakers as the core's fleet seam shows them (a
:class:`~.messages.Breakers`, which :class:`breaky._core.fleet.Link` is): a
name, a state, and whether the breaker is OFF by its own failures.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, final

import attrs

from breaky._core.fleet import State, View

from .hash_slot import hash_slot
from .messages import CHUNK, ROUND, Round, Tell, breaker_keys
from .tracker import Tracker

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TypeAlias

    from .messages import Breaker, Breakers, Mode, Sync

    # One script call's reply: three values per breaker (decoded or not).
    Reply: TypeAlias = Sequence[int | str | bytes]

__all__ = ["SyncProtocol"]

LOST = "fleet lost: Redis does not answer"


def _text(value: object) -> str:
    """A reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


@final
@attrs.define(eq=False)
class SyncProtocol:
    """One fleet instance's side of the sync with Redis (see the module).

    Args:
        instance: this instance's name (its own announcements are not news).
        prefix: the keys' prefix.
        period: seconds between heartbeats; leases are renewed twice a period.
        cluster: whether Redis is a cluster (script calls go per hash slot).

    """

    instance: str
    prefix: str
    period: float
    cluster: bool
    tracker: Tracker = attrs.field(factory=Tracker)
    # How many instances live, as the last heartbeat counted them.
    live: int = 1
    _tick_at: float = attrs.field(default=math.inf)
    _lease_tick: bool = attrs.field(default=True)
    # A round is away; the breakers that changed since are not told its
    # answer (a newer sync is queued, and it tells the truth).
    _away: bool = attrs.field(default=False)
    _stale: set[str] = attrs.field(factory=set[str])

    @property
    def deadline(self) -> float:
        """When :meth:`tick` has something to do (``inf``: out of a session)."""
        return self._tick_at

    @property
    def closing(self) -> bool:
        """Whether the supervisor closes: leave once what is queued is synced."""
        return self.tracker.closing

    def keys(self, name: str) -> tuple[list[str], int]:
        """One breaker's keys and their hash slot, worked out once."""
        known = self.tracker.keys.get(name)
        if known is None:
            keys = breaker_keys(self.prefix, name)
            known = self.tracker.keys[name] = (keys, hash_slot(keys[0]))
        return known

    # What happened.

    def joined(self, now: float, breakers: Breakers) -> None:
        """A session began: the heartbeat, and every breaker once.

        Every breaker is synced once, to learn what the fleet holds OFF.
        """
        tracker = self.tracker
        tracker.beat_due = True
        tracker.mark(*breakers.names(), *tracker.told, *tracker.reported)
        self._tick_at = now + self.period / 2
        self._lease_tick = True

    def tick(self, now: float) -> None:
        """Time passed: start the period's work when it is due.

        Leases are renewed twice a period: a lease lasts two periods, so
        three renewals in a row may come late (a stalled process, a slow
        round trip) before it lapses.
        """
        if now < self._tick_at:
            return
        if self._lease_tick:
            self.tracker.renew_leases()
        else:
            self.tracker.period()
        self._lease_tick = not self._lease_tick
        self._tick_at = now + self.period / 2

    def changed(self, name: str, old: State, new: State) -> None:
        """A breaker's state changed here."""
        if old is State.OFF and new is State.ON:
            self.tracker.recovered.add(name)
        self._changed(name)

    def missed(self, breakers: Breakers) -> None:
        """Some changes were missed: look at every breaker."""
        tracker = self.tracker
        every = [*breakers.names(), *tracker.told, *tracker.reported]
        for name in dict.fromkeys(every):
            self._changed(name)

    def _changed(self, name: str) -> None:
        if self._away:
            self._stale.add(name)
        self.tracker.mark(name)

    def heard(self, data: object, breakers: Breakers) -> None:
        """An announcement on the fleet's channel: sync that breaker soon."""
        try:
            event = json.loads(data)  # type: ignore[arg-type]
            name, by = str(event["breaker"]), str(event["by"])
            what = str(event["event"])
        except (ValueError, TypeError, KeyError):
            return  # not the script's: someone else's on our channel
        if by == self.instance or breakers.member(name) is None:
            return  # our own news, or not our breaker
        if what == "on":
            self.tracker.on_reasons[name] = f"fleet ON: {by} started the resource"
        self.tracker.mark(name)

    def lost(self, breakers: Breakers) -> list[Tell]:
        """The session ended: every breaker goes back to its local rules.

        Said to every breaker: one the fleet did not hold ignores it.
        """
        self.tracker.told.clear()
        self._tick_at = math.inf
        return [Tell(member, View.LOST, LOST) for member in breakers.members()]

    def close(self) -> None:
        """The supervisor closes."""
        self.tracker.close()

    # What to send.

    def next_round(self, breakers: Breakers) -> Round | None:
        """The next round trip, or ``None`` if nothing is to do now."""
        tracker = self.tracker
        if tracker.closing:
            tracker.routine.clear()  # leaving: no renewal matters now
        while tracker.pending:
            sent = self._round(breakers)
            if sent.beat or sent.calls:
                return sent
        return None

    def _round(self, breakers: Breakers) -> Round:
        tracker = self.tracker
        recovered: set[str] = set()
        fresh = False  # a report that may make the quorum: the reason counts
        names, urgent = tracker.take(ROUND)
        groups: dict[int, list[Sync]] = {}
        for i, name in enumerate(names):
            member = breakers.member(name)
            mode = self._mode(member, name)
            if name in tracker.recovered:  # told now, or moot
                tracker.recovered.discard(name)
                if mode == "recover":
                    recovered.add(name)
            if mode is None:
                tracker.forget(name)  # gone, with nothing left in Redis
                continue
            if member is not None and member.state is State.OFF:
                tracker.offs.add(name)
            else:
                tracker.offs.discard(name)
            if mode == "check" and i >= urgent and not self._known(name):
                continue  # a poll of a breaker OFF here, with nothing to say
            fresh = fresh or (mode == "report" and i < urgent)
            # Script calls: one slot each (on a cluster), at most CHUNK.
            slot = self.keys(name)[1] if self.cluster else 0
            groups.setdefault(slot, []).append((name, mode))
        self._away = True
        count_first = self.cluster and fresh
        beat = tracker.beat_due and not count_first
        tracker.beat_due = False
        calls = [
            group[i : i + CHUNK]
            for group in groups.values()
            for i in range(0, len(group), CHUNK)
        ]
        return Round(calls, beat, count_first, frozenset(recovered))

    def _known(self, name: str) -> bool:
        """Whether Redis holds something of this instance's for ``name``."""
        tracker = self.tracker
        return name in tracker.reported or name in tracker.told

    def _mode(self, member: Breaker | None, name: str) -> Mode | None:
        """What to tell Redis of ``name``, or None if Redis needs nothing."""
        tracker = self.tracker
        told = tracker.told.get(name, View.ON)
        if member is None or member.state is State.STOPPED:
            # Leaving: only a report or a lease needs taking back.
            needed = name in tracker.reported or told is View.PROBE
            return "leave" if needed else None
        if member.state is State.FORCED_OFF:
            return "yield"  # it cannot probe: its lease goes at once
        # A start succeeded after OFF (seen as a change, or as a breaker ON
        # that the fleet last told to be OFF: a change that was missed).
        held = told is not View.ON
        if name in tracker.recovered or (held and member.state is State.ON):
            return "recover"
        return "report" if member.sees_off else "check"

    # What Redis answered.

    def counted(self, live: int) -> None:
        """A heartbeat's answer: how many instances live."""
        self.live = live

    def failed(self, sent: Round) -> None:
        """``sent`` got no answer: tried again, in this session or the next."""
        tracker = self.tracker
        tracker.recovered |= sent.recovered
        tracker.beat_due = tracker.beat_due or sent.beat
        for call in sent.calls:
            for name, _ in call:
                tracker.dirty[name] = None
        self._back()

    def _back(self) -> None:
        self._away = False
        self._stale.clear()

    def received(
        self, sent: Round, replies: Sequence[Reply], breakers: Breakers
    ) -> list[Tell]:
        """Redis answered ``sent`` (a reply per call): what to tell whom."""
        tells: list[Tell] = []
        for call, reply in zip(sent.calls, replies, strict=True):
            for j, sync in enumerate(call):
                tell = self._apply(breakers, sync, reply, 3 * j)
                if tell is not None:
                    tells.append(tell)
        self._back()
        return tells

    def _apply(
        self, breakers: Breakers, sync: Sync, reply: Reply, at: int
    ) -> Tell | None:
        """What to tell the breaker of Redis's answer, unless it changed meanwhile."""
        tracker = self.tracker
        name, mode = sync
        if mode == "report":
            tracker.reported.add(name)
        else:
            tracker.reported.discard(name)
        # An announcement's reason serves this answer or none.
        on_reason = tracker.on_reasons.pop(name, "fleet ON")
        member = breakers.member(name)
        if mode == "leave" or member is None:
            if name in self._stale:  # a newcomer of that name: its own sync
                tracker.told.pop(name, None)
            else:
                tracker.forget(name)
            return None
        if name in self._stale:
            return None  # changed while Redis answered: its next sync tells it
        if mode == "yield":
            # Forced OFF: whatever the fleet says waits for reset(), which
            # clears any hold; nothing to renew until then.
            tracker.told.pop(name, None)
            return None
        if mode == "recover" and member.sees_off:
            # Its start succeeded, and it tripped since: report that now.
            tracker.mark(name)
        return self._tell(member, reply[at : at + 3], on_reason)

    def _tell(self, member: Breaker, answer: Reply, on_reason: str) -> Tell | None:
        """What to tell ``member`` of the fleet's ``answer``: OFF, prober, why."""
        tracker, name = self.tracker, member.name
        off, prober, why = answer
        told = tracker.told.get(name, View.ON)
        if not int(off):
            if told is View.ON:
                return None  # the common case: nothing to say
            view, reason = View.ON, on_reason
        elif int(prober):
            view = View.PROBE
            reason = f"fleet OFF: {_text(why)}; this instance probes"
        else:
            view, reason = View.OFF, f"fleet OFF: {_text(why)}"
        # Told again if the breaker went its own way since (a reset() whose
        # start failed reports OFF while the fleet still holds it).
        if view is told and not (view is not View.ON and member.sees_off):
            return None
        if view is View.ON:
            tracker.told.pop(name, None)
        else:
            tracker.told[name] = view
        return Tell(member, view, reason)
