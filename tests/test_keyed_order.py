"""The order of a keyed group's keys, on its own (pure: no Trio, no clock).

Random uses, searches for room and sweeps, against a model that keeps each
key's last use as the number of sweeps before it: the order stays the order
of last use, a search for room passes each key once per use of it, and a
sweep takes out exactly the keys unused for one period that are idle and
those unused for two that are stale.
"""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from breaky._groups.order import KeyOrder

KEYS = [f"k{n}" for n in range(8)]

# (what, key): a use; a search for room; a sweep; a key turns healthy
# (idle, and stale) or not; a key turns stale (but not idle) or not.
OPERATIONS = st.tuples(
    st.sampled_from(["use", "use", "room", "sweep", "healthy", "stale"]),
    st.sampled_from(KEYS),
)


@attrs.define
class Key:
    """What the model knows of one key."""

    name: str
    sweeps: int  # sweeps done before its last use
    turn: int  # when it was last used, for keys of the same period
    looked: bool = False  # looked at and found in use since its last use
    healthy: bool = False
    stale: bool = False


@attrs.define
class Model:
    """The order under test, and what it should hold."""

    order: KeyOrder[Key] = attrs.Factory(KeyOrder)
    alive: dict[str, Key] = attrs.Factory(dict)
    sweeps: int = 0
    turns: itertools.count[int] = attrs.Factory(itertools.count)
    passed: int = 0  # keys a search for room looked at
    uses: int = 0

    def by_last_use(self) -> list[Key]:
        return sorted(self.alive.values(), key=lambda key: (key.sweeps, key.turn))

    def use(self, name: str) -> None:
        self.uses += 1
        key = self.order.use(name)
        assert (key is None) == (name not in self.alive)
        if key is None:
            key = self.alive[name] = Key(name, self.sweeps, 0)
            self.order.add(name, key)
        key.sweeps, key.turn, key.looked = self.sweeps, next(self.turns), False

    def room(self) -> None:
        fresh = [key for key in self.by_last_use() if not key.looked]
        first = next((key for key in fresh if key.healthy), None)
        found = self.order.find_room(lambda key: key.healthy)
        assert found == (None if first is None else (first.name, first))
        for key in itertools.takewhile(lambda key: key is not first, fresh):
            key.looked = True
            self.passed += 1
        if first is not None:
            del self.alive[first.name]

    def sweep(self) -> None:
        self.sweeps += 1
        gone = self.order.sweep(lambda key: key.healthy, lambda key: key.stale)
        now = self.sweeps
        expected = {
            key.name
            for key in self.alive.values()
            if (key.sweeps <= now - 3 and key.stale)
            or (key.sweeps == now - 2 and key.healthy)
        }
        assert {name for name, _ in gone} == expected
        for key in list(self.alive.values()):
            if key.name in expected:
                del self.alive[key.name]
            elif key.sweeps <= now - 2:
                key.looked = True

    def check(self) -> None:
        """The order is the order of last use; the keys looked at come first."""
        order = self.order
        keys = self.by_last_use()
        assert [name for name, _ in order.items()] == [key.name for key in keys]
        assert [name for name in order.kept if isinstance(name, str)] == [
            key.name for key in keys if key.looked
        ]
        assert len(order) == len(keys)
        assert all(name in order for name in self.alive)
        assert self.passed <= self.uses


@settings(max_examples=300)
@given(st.lists(OPERATIONS, max_size=120))
def test_the_order_is_last_use_and_each_key_is_passed_once_per_use(
    operations: list[tuple[str, str]],
) -> None:
    model = Model()
    model.order.start_sweeps()
    for what, name in operations:
        key = model.alive.get(name)
        if what == "use":
            model.use(name)
        elif what == "room":
            model.room()
        elif what == "sweep":
            model.sweep()
        elif key is not None and what == "healthy":
            key.healthy = key.stale = not key.healthy
        elif key is not None:
            key.stale = not key.stale or key.healthy
        model.check()


def test_no_key_left_ends_the_ticks() -> None:
    order: KeyOrder[str] = KeyOrder()
    order.start_sweeps()
    order.add("a", "a")
    assert order.sweep(lambda _: True, lambda _: True) == []
    assert order.sweep(lambda _: True, lambda _: True) == [("a", "a")]
    order.end_sweeps()
    assert (len(order.fresh), len(order.kept), len(order.ticks)) == (0, 0, 0)
    order.add("b", "b")
    assert order.clear() == [("b", "b")]
    assert len(order) == 0
