"""The order of a keyed group's keys: last use first, and what was found in use.

Pure bookkeeping, with no Trio and no clock: the group says when a sweep is
due and what may be forgotten (:mod:`breaky._groups.group`).

The keys are one sequence, least recently used first, cut in two: ``kept``,
the front, holds keys the group looked at since their last use and found in
use (failing, busy); ``fresh``, the back, those not looked at since. A use
moves a key to the end of ``fresh``; making room looks only at ``fresh`` and
moves what it passes to ``kept``, so each key is looked at there at most once
per use: refusing a new key costs O(1) amortized, however many keys are in
use.

*Ticks* (a marker the sweep puts at the end every period) cut the sequence
by age: a key in front of the tick before last was unused for more than one
period, a key in front of the one before that for more than two. Each sweep
looks at those two stretches only, never at the keys used since.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Generic, TypeVar, final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

V = TypeVar("V")
# A key in use is forgotten once unused for this many periods: the sweep
# keeps this many ticks, and looks in front of the oldest and of the newest.
STALE_PERIODS = 2


@final
class Tick:
    """A sweep's marker in the order of keys (never a ``str``)."""

    __slots__ = ()


@final
class KeyOrder(Generic[V]):
    """A group's keys and their values, in the order of their last use."""

    __slots__ = ("fresh", "kept", "ticks")

    def __init__(self) -> None:
        # The group reads ``fresh`` on its call path: it stays the same dict.
        self.fresh: OrderedDict[str | Tick, V | None] = OrderedDict()
        self.kept: OrderedDict[str | Tick, V | None] = OrderedDict()
        self.ticks: deque[Tick] = deque()  # at most two between sweeps

    def __len__(self) -> int:
        return len(self.fresh) + len(self.kept) - len(self.ticks)

    def __contains__(self, key: str) -> bool:
        return key in self.fresh or key in self.kept

    def items(self) -> Iterator[tuple[str, V]]:
        """Every key and its value, least recently used first."""
        for part in (self.kept, self.fresh):
            for key, value in part.items():
                if value is not None:
                    assert isinstance(key, str)  # noqa: S101 - ticks have none
                    yield key, value

    def use(self, key: str) -> V | None:
        """The value of ``key``, moved to the end (a use); ``None`` if absent.

        Raises:
            TypeError: ``key`` is unhashable.

        """
        value = self.fresh.get(key)
        if value is not None:
            self.fresh.move_to_end(key)
            return value
        value = self.kept.pop(key, None)
        if value is not None:
            self.fresh[key] = value
        return value

    def add(self, key: str, value: V) -> None:
        """A new key, used now."""
        self.fresh[key] = value

    def find_room(self, forgettable: Callable[[V], bool]) -> tuple[str, V] | None:
        """Take out the first ``forgettable`` key among those not looked at.

        The keys passed on the way, found in use, go to ``kept``: looked at
        again only once used again (or by a sweep).
        """
        fresh, kept = self.fresh, self.kept
        while fresh:
            key, value = fresh.popitem(last=False)
            if value is not None and forgettable(value):
                assert isinstance(key, str)  # noqa: S101 - ticks have none
                return key, value
            kept[key] = value
        return None

    def start_sweeps(self) -> None:
        """The first tick, in front of every key."""
        tick = Tick()
        self.ticks.append(tick)
        self.fresh[tick] = None
        self.fresh.move_to_end(tick, last=False)

    def end_sweeps(self) -> None:
        """No key left: the ticks go too."""
        assert len(self) == 0  # noqa: S101 - only ticks are left
        self.fresh.clear()
        self.kept.clear()
        self.ticks.clear()

    def sweep(
        self, idle: Callable[[V], bool], stale: Callable[[V], bool]
    ) -> list[tuple[str, V]]:
        """A period has passed: take out what may be forgotten, and return it.

        A key unused for two periods or more is taken out if ``stale``; one
        unused for one period or more if ``idle``. The others stay in front,
        in their order, to be looked at again at the next sweep.
        """
        gone: list[tuple[str, V]] = []
        stay: list[tuple[str, V]] = []
        tick = Tick()
        self.ticks.append(tick)
        self.fresh[tick] = None
        if len(self.ticks) > STALE_PERIODS:  # the tick of two periods ago
            self._look(self.ticks.popleft(), stale, gone, stay)
        self._look(self.ticks[0], idle, gone, stay, keep=True)
        kept = self.kept
        for key, value in reversed(stay):
            kept[key] = value
            kept.move_to_end(key, last=False)
        return gone

    def clear(self) -> list[tuple[str, V]]:
        """Take every key out, and return them with their values."""
        every = list(self.items())
        self.fresh.clear()
        self.kept.clear()
        self.ticks.clear()
        return every

    def _look(
        self,
        tick: Tick,
        forgettable: Callable[[V], bool],
        gone: list[tuple[str, V]],
        stay: list[tuple[str, V]],
        *,
        keep: bool = False,
    ) -> None:
        """Take out the keys in front of ``tick``, into ``gone`` or ``stay``.

        ``keep``: the tick stays where it was (else it goes too).
        """
        while True:
            part = self.kept or self.fresh
            key, value = part.popitem(last=False)
            if key is tick:
                if keep:
                    part[tick] = None
                    part.move_to_end(tick, last=False)
                return
            assert value is not None  # noqa: S101 - only ticks have none
            assert isinstance(key, str)  # noqa: S101
            (gone if forgettable(value) else stay).append((key, value))
