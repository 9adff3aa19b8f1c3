"""What the fleet's sync protocol reads and says (see :mod:`.protocol`).

The breakers as it sees them (:class:`Breakers`, which the core's
:class:`~breaky._core.fleet.Link` is), the rounds it asks to send to Redis
(:class:`Round`: the heartbeat and the script calls of :mod:`.scripts`), and
what it tells the breakers (:class:`Tell`). Pure: no Trio, no coredis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from breaky._core.fleet import State, View

__all__ = [
    "CHUNK",
    "ROUND",
    "Breaker",
    "Breakers",
    "Mode",
    "Round",
    "Sync",
    "Tell",
    "breaker_keys",
]

# The most breakers in one script call (Redis runs a call without a pause,
# so a call must stay short), and in one round trip (so that leases and
# announcements never wait behind more than one such trip).
CHUNK = 200
ROUND = 1000

Mode = Literal["report", "check", "recover", "yield", "leave"]

# One breaker's part of a round trip: its name and the mode sent. A tuple of
# two str: the garbage collector stops tracking it, so that thousands of them
# waiting on a round trip never make it walk the heap.
Sync = tuple[str, Mode]


class Breaker(Protocol):
    """One breaker, as the protocol sees it (a :class:`~breaky._core.fleet.Member`)."""

    @property
    def name(self) -> str:
        """Its name."""
        ...  # pragma: no cover

    @property
    def state(self) -> State:
        """Its state here."""
        ...  # pragma: no cover

    @property
    def sees_off(self) -> bool:
        """Whether it is OFF by its own failures."""
        ...  # pragma: no cover

    def tell(self, view: View, reason: str, /) -> None:
        """Feed it what the fleet says (the transport does, as told)."""
        ...  # pragma: no cover


class Breakers(Protocol):
    """A supervisor's breakers (a :class:`~breaky._core.fleet.Link`)."""

    def names(self) -> list[str]:
        """The names of the breakers running now."""
        ...  # pragma: no cover

    def members(self) -> Sequence[Breaker]:
        """The breakers running now."""
        ...  # pragma: no cover

    def member(self, name: str, /) -> Breaker | None:
        """The breaker running under ``name``, or ``None``."""
        ...  # pragma: no cover


def breaker_keys(prefix: str, name: str) -> list[str]:
    """The keys of one breaker: reports, fleet state, probe lease.

    The breaker's name is their hash tag: on Redis Cluster they share a slot,
    so one script may use them all.
    """
    base = f"{prefix}:{{{name}}}"
    return [f"{base}:reports", f"{base}:fleet", f"{base}:probe"]


@final
@attrs.frozen(eq=False)
class Tell:
    """What to tell one breaker: ``view``, and why."""

    member: Breaker
    view: View
    reason: str

    def apply(self) -> None:
        """Tell it (the transport's part)."""
        self.member.tell(self.view, self.reason)


@final
@attrs.frozen
class Round:
    """One round trip to send: the heartbeat if due, and the script calls.

    ``calls`` are the syncs grouped into script calls (one hash slot each on
    a cluster, at most ``CHUNK`` breakers). With ``count_first`` (a cluster,
    and a report that may make a quorum) the heartbeat goes first, on its
    own, so that the quorum's reason counts the live instances.
    """

    calls: list[list[Sync]]
    beat: bool
    count_first: bool
    recovered: frozenset[str]
