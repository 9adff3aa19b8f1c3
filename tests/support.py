"""Resources the tests supervise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from breaky._core.fleet import Fleet, Link

if TYPE_CHECKING:
    import breaky


@attrs.define
class World:
    """What a test's resource depends on, and what it saw."""

    down: bool = False  # starts fail, serving crashes
    starts: int = 0  # start attempts
    seen: list[Any] = attrs.Factory(list)  # messages the resource took
    finally_ran: int = 0


async def service(
    inbox: breaky.Inbox[Any, Any],
    world: World,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A resource that answers ``("echo", x)``, ``("sleep", s)``, ``("fail", e)``,
    ``("crash", e)``, ``("return",)``, ``("hold",)`` and counts its starts."""
    world.starts += 1
    try:
        if world.down:
            raise ConnectionRefusedError("down")
        task_status.started(f"conn {world.starts}")
        async for request in inbox:
            world.seen.append(request.message)
            if world.down:
                raise ConnectionResetError("went down")
            match request.message:
                case ("sleep", seconds):
                    await trio.sleep(seconds)
                    request.reply(seconds)
                case ("fail", error):
                    request.fail(error)
                case ("crash", error):
                    raise error
                case ("return",):
                    return
                case ("hold",):
                    await trio.sleep_forever()
                case message:
                    request.reply(message)
    finally:
        world.finally_ran += 1


def answered_calls(stats: breaky.BreakerStatistics) -> int:
    """Every kind of answer a call can get, plus the calls still pending."""
    return (
        stats.replies
        + stats.errors
        + stats.off
        + stats.shed
        + stats.timeouts
        + stats.lost
        + stats.cancelled
        + stats.pending
    )


@final
class LinkOnly(Fleet):
    """A fleet that the test plays: it keeps the supervisor's :class:`Link`.

    Pass it as ``open_supervisor(fleet=...)``; the test then tells breakers
    what a fleet would, through ``link.member(name).tell(...)``, without Redis.
    """

    __slots__ = ("_claimed", "_link")

    def __init__(self) -> None:
        self._claimed = False
        self._link: Link | None = None

    @property
    def link(self) -> Link:
        """The link of the supervisor it serves."""
        assert self._link is not None, "not serving a supervisor"
        return self._link

    def claim(self) -> None:
        if self._claimed:
            msg = "this LinkOnly fleet already serves a supervisor"
            raise RuntimeError(msg)
        self._claimed = True

    async def serve(self, link: Link, *, task_status: trio.TaskStatus[None]) -> None:
        self._link = link
        # Served until the supervisor closes: its subscription then ends.
        async with link.subscribe() as changes:
            task_status.started()
            async for _ in changes:
                pass
        self._claimed = False
