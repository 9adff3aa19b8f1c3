"""What a supervisor does with a breaker of any kind, and nothing more.

Every kind a supervisor holds (a resource breaker, a guard, a keyed group)
hands it one :class:`Lifecycle` when it is made: how to start its tasks in a
nursery, stop it with a grace, wait until it has settled or stopped, and its
core (``None`` for a keyed group, whose keys have theirs). The supervisor and
the fleet use only that: no kind is told apart from another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import trio

    from breaky._core.core import Core


def _no_tasks(_: trio.Nursery) -> None:
    """A kind with no task of its own starts nothing."""


async def _at_once() -> None:
    """A kind with no task of its own has nothing to wait for."""


@final
@attrs.frozen
class Lifecycle:
    """How to start, stop and wait for one breaker (or group) of any kind."""

    core: Core | None
    """Its core; ``None`` for a keyed group (each key has its own)."""
    stop: Callable[[float], None]
    """Stop it, letting a resource finish within the given grace (seconds)."""
    start: Callable[[trio.Nursery], None] = _no_tasks
    """Start its tasks in the given nursery."""
    settled: Callable[[], Awaitable[None]] = _at_once
    """Wait until its first start has settled (ON, or OFF)."""
    stopped: Callable[[], Awaitable[None]] = _at_once
    """Wait until every task it started has ended."""

    @classmethod
    def of_core(cls, core: Core) -> Lifecycle:
        """A breaker with no task of its own (a guard): stopping is its core's."""
        return cls(core, lambda _: core.stop())
