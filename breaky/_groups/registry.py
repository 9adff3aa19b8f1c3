"""Breakers by name, of every kind, for a supervisor, its fleet and its metrics.

The registry knows each breaker through an :class:`Entry`: the breaker as
users see it, and its :class:`~breaky._core.lifecycle.Lifecycle` (its core,
what a fleet talks to, and how to start, stop and wait for it). It is apart
from the nursery, so that whoever needs the breakers by name (the
supervisor, a fleet's :class:`~breaky._core.fleet.Link`) needs nothing else.

A keyed group (:mod:`breaky._groups.keyed`) is one entry under its name, with no
core of its own; each of its live keys is a core of its own here, under the
name ``group[key]``, which no other breaker may take: a fleet sees every key
as one more breaker. A group's name has no ``[``, so that ``group[key]``
names one group and one key: the group is what comes before the first ``[``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import attrs

from breaky._core.events import Publisher
from breaky._core.fleet import Member

if TYPE_CHECKING:
    from collections.abc import Iterator

    from breaky._core.core import Core
    from breaky._core.events import StateChanges
    from breaky._core.lifecycle import Lifecycle


@final
@attrs.frozen
class Entry:
    """One breaker in a registry."""

    breaker: Any
    life: Lifecycle

    @property
    def core(self) -> Core | None:
        """Its core; ``None`` for a keyed group (its keys have theirs)."""
        return self.life.core


@final
@attrs.define(eq=False)
class Registry:
    """Breakers by name; a name is taken once, whatever the breaker's kind."""

    _entries: dict[str, Entry] = attrs.field(factory=dict[str, Entry])
    # The live keys of keyed groups, by their names "group[key]".
    _keys: dict[str, Core] = attrs.field(factory=dict[str, "Core"])
    # Every change of every breaker in it, for subscribers of the whole.
    publisher: Publisher = attrs.field(factory=Publisher)
    # Closed: every breaker was stopped, and none may be added.
    closed: bool = attrs.field(init=False, default=False)

    def close(self, grace: float) -> None:
        """Stop every breaker (resources get ``grace`` seconds); end the changes."""
        self.closed = True
        for entry in self.clear():
            entry.life.stop(grace)
        # Every breaker is STOPPED now: there will be no more changes.
        self.publisher.end()

    def check_free(self, name: object, *, group: bool = False) -> None:
        """Refuse a name that is no ``str``, empty, taken, or a group's key's.

        ``group``: the name is for a keyed group, which may not hold a ``[``
        and whose keys' names (``name[...]``) must not be taken either.
        """
        if not isinstance(name, str):
            msg = f"name must be a str, got {name!r}"
            raise TypeError(msg)
        if not name:
            msg = "name must be a non-empty str, got ''"
            raise ValueError(msg)
        if group and "[" in name:
            msg = (
                f"a keyed group's name must not contain '[' (its keys are named "
                f"name[key], and each such name must say which group and key "
                f"it is), got {name!r}"
            )
            raise ValueError(msg)
        if name in self._entries:
            msg = f"a breaker or guard named {name!r} is already running here"
            raise ValueError(msg)
        owner = self._group_of(name)
        if owner is not None:
            msg = (
                f"the name {name!r} is reserved: the keyed group {owner!r} "
                f"names its keys {owner}[key]"
            )
            raise ValueError(msg)
        if group:
            taken = [
                n for n in self._entries if n.startswith(f"{name}[") and n.endswith("]")
            ]
            if taken:
                msg = (
                    f"a keyed group named {name!r} would name its keys {name}[key], "
                    f"and {min(taken)!r} is already running here"
                )
                raise ValueError(msg)

    def _group_of(self, name: str) -> str | None:
        """The group whose key ``name`` would name (``group[key]``), if any."""
        at = name.find("[")
        if at == -1 or not name.endswith("]"):
            return None
        entry = self._entries.get(name[:at])  # a group's name has no "["
        return name[:at] if entry is not None and entry.core is None else None

    def add(self, name: str, entry: Entry) -> None:
        """Register ``entry`` under ``name`` (checked free with :meth:`check_free`)."""
        self._entries[name] = entry

    def remove(self, name: str) -> Entry:
        """Take the entry of ``name`` out; ``KeyError`` if there is none."""
        return self._entries.pop(name)

    def get(self, name: str) -> Entry | None:
        """The entry of ``name``, or ``None``."""
        return self._entries.get(name)

    def names(self) -> list[str]:
        """The names registered now, in the order they were taken."""
        return list(self._entries)

    def add_key(self, name: str, core: Core) -> None:
        """A keyed group made a key: its core, under ``group[key]``."""
        self._keys[name] = core

    def remove_key(self, name: str) -> None:
        """A keyed group forgot a key."""
        del self._keys[name]

    def core(self, name: str) -> Core | None:
        """The core of the breaker (or live key) ``name``, or ``None``."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry.core
        return self._keys.get(name)

    def cores(self) -> list[Core]:
        """The cores of every breaker, a group's live keys included."""
        plain = [e.core for e in self._entries.values() if e.core is not None]
        return [*plain, *self._keys.values()]

    def clear(self) -> list[Entry]:
        """Take every entry out, and return them."""
        entries = list(self._entries.values())
        self._entries.clear()
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))


# The longest key, in characters: a key is kept twice (as itself and in its
# name), and a host name is at most 253.
MAX_KEY_LENGTH = 1024


def check_key(key: object) -> str:
    """``key`` if it can be a group's key: a ``str`` of 1 to 1,024 characters."""
    if not isinstance(key, str):
        msg = f"key must be a str (a host, a tenant id, a shard name), got {key!r}"
        raise TypeError(msg)
    if not key or len(key) > MAX_KEY_LENGTH:
        shown = repr(key) if len(key) <= 40 else f"{key[:40]!r}..."
        msg = (
            f"key must be a str of 1 to {MAX_KEY_LENGTH:,} characters (a host, "
            f"a tenant id, a shard name), got {len(key):,} characters: {shown}"
        )
        raise ValueError(msg)
    return key


def key_name(group: str, key: str) -> str:
    """The name of a group's key, for logs, events, metrics and a fleet."""
    return f"{group}[{key}]"


# The most changes a fleet's subscription holds before it misses some.
_LINK_BUFFER = 1_000_000


@final
@attrs.define(eq=False)
class RegistryLink:
    """A supervisor's breakers, as its fleet sees them."""

    _registry: Registry

    def names(self) -> list[str]:
        """The names of the breakers running now (a group's keys: ``group[key]``)."""
        return [core.name for core in self._registry.cores()]

    def members(self) -> list[Member]:
        """The breakers running now, each live key of a keyed group included."""
        return [Member(core) for core in self._registry.cores()]

    def member(self, name: str) -> Member | None:
        """The breaker (or live key) running under ``name``, or ``None``."""
        core = self._registry.core(name)
        return None if core is None else Member(core)

    def subscribe(self) -> StateChanges:
        """Every later state change; the channel ends when the supervisor closes."""
        # Room for a keyed group's sweep, which may forget 100,000 keys at
        # once: missed changes would make the fleet look at every breaker.
        return self._registry.publisher.subscribe(_LINK_BUFFER)
