"""The seam between a supervisor's breakers and a fleet that shares their state.

A fleet (for now only :class:`breaky.redis.RedisFleet`) runs as one task in a
supervisor's nursery. It sees the supervisor through a :class:`Link`: the
names of its breakers, each breaker as a :class:`Member`, and a subscription
to their state changes. It tells a breaker what the fleet decided through one
method, :meth:`Member.tell`, which feeds the breaker's state machine like any
other input. Nothing else of the core is open to it, and the core imports
nothing of any fleet.
"""

from __future__ import annotations

import abc
import enum
from typing import TYPE_CHECKING, Any, final

import attrs

from ._machine import Machine, State

if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

    from ._breaker import CircuitBreaker
    from ._events import StateChanges
    from ._supervisor import Supervisor

__all__ = ["Fleet", "Link", "Member", "View"]


class View(enum.Enum):
    """What a fleet tells one instance's breaker."""

    OFF = "off"
    """The fleet holds the breaker OFF, and another instance probes."""
    PROBE = "probe"
    """The fleet holds the breaker OFF, and this instance probes."""
    ON = "on"
    """The fleet does not hold it OFF (or no longer: then start soon)."""
    LOST = "lost"
    """The fleet cannot be reached: the local rules alone apply."""


_INPUTS: dict[View, Callable[[Machine, float], None]] = {
    View.OFF: Machine.fleet_off,
    View.PROBE: Machine.fleet_probe,
    View.ON: Machine.fleet_on,
    View.LOST: Machine.fleet_lost,
}


@final
@attrs.define(eq=False)
class Member:
    """One breaker, as a fleet sees it."""

    _breaker: CircuitBreaker[Any, Any]

    @property
    def state(self) -> State:
        """The breaker's state here."""
        return self._breaker.state

    @property
    def sees_off(self) -> bool:
        """Whether it is OFF by its own failures: what the fleet counts."""
        return self._breaker._machine.sees_off

    def tell(self, view: View, reason: str) -> None:
        """Feed the breaker's machine what the fleet says, with its reason."""
        self._breaker._fleet_says(_INPUTS[view], reason)


@final
@attrs.define(eq=False)
class Link:
    """A supervisor, as its fleet sees it."""

    _supervisor: Supervisor

    def names(self) -> list[str]:
        """The names of the breakers running now."""
        return list(self._supervisor)

    def members(self) -> list[Member]:
        """The breakers running now."""
        return [Member(b) for b in self._supervisor._breakers.values()]

    def member(self, name: str) -> Member | None:
        """The breaker running under ``name``, or ``None``."""
        breaker = self._supervisor._breakers.get(name)
        return None if breaker is None else Member(breaker)

    def subscribe(self) -> StateChanges:
        """Every later state change; the channel ends when the supervisor closes."""
        return self._supervisor.subscribe(max_buffer=10_000)


class Fleet(abc.ABC):
    """A shared view of breakers across processes, which a supervisor joins."""

    __slots__ = ()

    @abc.abstractmethod
    def _claim(self) -> None:
        """Reserve the fleet for one supervisor, or raise ``RuntimeError``.

        Called by :func:`breaky.open_supervisor` before anything starts; the
        fleet is free again when :meth:`_serve` ends.
        """

    @abc.abstractmethod
    async def _serve(self, link: Link, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve one supervisor until its subscription ends.

        Called in the supervisor's nursery; ``task_status.started()`` must
        come without waiting for the store. Only cancellation may escape.
        """
