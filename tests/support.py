"""Resources the tests supervise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio

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
