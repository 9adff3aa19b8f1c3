"""Breakers by name, of every kind, for a supervisor, its fleet and its metrics.

The registry knows each breaker through an :class:`Entry`: the breaker as
users see it, its :class:`~breaky._core.Core` (what a fleet talks to), and
how to stop it. It is apart from the nursery, so that whoever needs the
breakers by name (the supervisor, a fleet's :class:`~breaky._fleet.Link`)
needs nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import attrs

from ._events import Publisher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._core import Core


@final
@attrs.frozen
class Entry:
    """One breaker in a registry."""

    breaker: Any
    core: Core
    # Stop it, letting its resource (if any) finish within the given grace.
    stop: Callable[[float], None]


@final
@attrs.define(eq=False)
class Registry:
    """Breakers by name; a name is taken once, whatever the breaker's kind."""

    _entries: dict[str, Entry] = attrs.field(factory=dict[str, Entry])
    # Every change of every breaker in it, for subscribers of the whole.
    publisher: Publisher = attrs.field(factory=Publisher)

    def check_free(self, name: object) -> None:
        """Refuse a name that is no ``str``, or one that is taken."""
        if not isinstance(name, str):
            msg = f"name must be a str, got {name!r}"
            raise TypeError(msg)
        if name in self._entries:
            msg = f"a breaker or guard named {name!r} is already running here"
            raise ValueError(msg)

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

    def entries(self) -> list[Entry]:
        """The entries registered now."""
        return list(self._entries.values())

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
