"""The seam between a supervisor's breakers and a fleet that shares their state.

A fleet (for now only :class:`breaky.redis.RedisFleet`) runs as one task in a
supervisor's nursery. It sees the supervisor's breakers, of both kinds,
through a :class:`Link` over its registry: their names, each breaker's core as
a :class:`Member`, and a subscription to their state changes. It tells a
breaker what the fleet decided through one method, :meth:`Member.tell`, which
feeds the breaker's state machine like any other input. Nothing else of the
core is open to it, and the core imports nothing of any fleet.
"""

from __future__ import annotations

import abc
import enum
from typing import TYPE_CHECKING, Protocol, final

import attrs

from breaky._core.machine import Machine
from breaky._core.states import State

if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

    from .events import StateChanges

# State is the seam's too: what a Member reports.
__all__ = ["Fleet", "Link", "Member", "State", "View"]


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


class Seat(Protocol):
    """What a breaker's core offers a fleet (the core implements it)."""

    @property
    def name(self) -> str:
        """The breaker's name."""
        ...

    @property
    def state(self) -> State:
        """The breaker's state."""
        ...

    @property
    def sees_off(self) -> bool:
        """Whether it is OFF by its own failures."""
        ...

    def fleet_says(self, event: Callable[[Machine, float], None], reason: str) -> None:
        """One more input to its machine, from the fleet."""
        ...


@final
@attrs.define(eq=False)
class Member:
    """One breaker, as a fleet sees it."""

    _core: Seat

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self._core.name

    @property
    def state(self) -> State:
        """The breaker's state here."""
        return self._core.state

    @property
    def sees_off(self) -> bool:
        """Whether it is OFF by its own failures: what the fleet counts."""
        return self._core.sees_off

    def tell(self, view: View, reason: str) -> None:
        """Feed the breaker's machine what the fleet says, with its reason."""
        self._core.fleet_says(_INPUTS[view], reason)


class Link(Protocol):
    """A supervisor's breakers, as its fleet sees them."""

    def names(self) -> list[str]:
        """The names of the breakers running now (a group's keys: ``group[key]``)."""
        ...

    def members(self) -> list[Member]:
        """The breakers running now, each live key of a keyed group included."""
        ...

    def member(self, name: str) -> Member | None:
        """The breaker (or live key) running under ``name``, or ``None``."""
        ...

    def subscribe(self) -> StateChanges:
        """Every later state change; the channel ends when the supervisor closes."""
        ...


class Fleet(abc.ABC):
    """A shared view of breakers across processes, which a supervisor joins."""

    __slots__ = ()

    @abc.abstractmethod
    def claim(self) -> None:
        """Reserve the fleet for one supervisor, or raise ``RuntimeError``.

        Called by :func:`breaky.open_supervisor` before anything starts; the
        fleet is free again when :meth:`serve` ends.
        """

    @abc.abstractmethod
    async def serve(self, link: Link, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve one supervisor until its subscription ends.

        Called in the supervisor's nursery; ``task_status.started()`` must
        come without waiting for the store. Only cancellation may escape.
        """
