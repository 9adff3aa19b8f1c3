"""Resources the tests supervise."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires
from typing import TYPE_CHECKING, Any

import attrs
import pytest
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


def _fleet_unsupported() -> str:
    """Why coredis cannot run on the trio installed here, or ``""``.

    anyio (under coredis) declares the trio it needs in its ``trio`` extra;
    the oldest trio breaky supports (0.25, in ``nox -s tests_oldest``) is
    older, and ``pip install "breaky[redis]"`` upgrades it.
    """
    from packaging.requirements import Requirement  # noqa: PLC0415 - coredis's
    from packaging.version import Version  # noqa: PLC0415

    try:
        needs = [Requirement(r) for r in requires("anyio") or []]
    except PackageNotFoundError:  # pragma: no cover - coredis brings it
        return "anyio is not installed"
    for need in needs:
        if (
            need.name == "trio"
            and need.marker is not None
            and need.marker.evaluate({"extra": "trio"})
            and Version(trio.__version__) not in need.specifier
        ):
            return f"coredis runs on trio{need.specifier}, not {trio.__version__}"
    return ""


FLEET_UNSUPPORTED = _fleet_unsupported()
# For the tests that run a fleet (not those of its pure parts).
requires_fleet = pytest.mark.skipif(
    bool(FLEET_UNSUPPORTED), reason=FLEET_UNSUPPORTED or "supported"
)
