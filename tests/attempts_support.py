"""A scripted dependency for the attempts' tests: each run does what it is told."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    import breaky


class Down(ConnectionError):  # noqa: N818 - a state, as the tests name it
    """What the scripted dependency raises when told to fail."""


class NotFound(LookupError):  # noqa: N818 - an answer, as a 404
    """An answer that is no failure of the dependency (a 404)."""


@attrs.define
class Step:
    """What one run does: wait ``seconds``, then return ``value`` or raise."""

    seconds: float = 0.0
    value: object = "ok"
    error: Exception | None = None

    async def __call__(self) -> object:
        await trio.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return self.value


def ok(value: object = "ok", seconds: float = 0.0) -> Step:
    return Step(seconds, value)


def fail(error: Exception | None = None, seconds: float = 0.0) -> Step:
    return Step(seconds, error=error or Down("down"))


def hang() -> Step:
    return Step(math.inf)


@attrs.define
class Script:
    """Runs of ``fn`` take their steps in order; the last step repeats."""

    steps: list[Step]
    # When each run started, and with which arguments.
    started: list[float] = attrs.Factory(list)
    args: list[tuple[object, ...]] = attrs.Factory(list)
    # Runs that ended, and how: "ok", the exception's type, or "cancelled".
    ended: list[str] = attrs.Factory(list)

    async def fn(self, *args: object) -> object:
        self.started.append(trio.current_time())
        self.args.append(args)
        step = self.steps[min(len(self.started), len(self.steps)) - 1]
        try:
            value = await step()
        except Exception as exc:
            self.ended.append(type(exc).__name__)
            raise
        except BaseException:
            self.ended.append("cancelled")
            raise
        self.ended.append("ok")
        return value

    @property
    def runs(self) -> int:
        return len(self.started)

    def gaps(self) -> list[float]:
        """Seconds between the starts of consecutive runs."""
        return [b - a for a, b in zip(self.started, self.started[1:], strict=False)]


def adds_up(stats: breaky.BreakerStatistics) -> bool:
    """Every attempt counted once, in one outcome or pending."""
    answered = (
        stats.replies
        + stats.errors
        + stats.off
        + stats.shed
        + stats.timeouts
        + stats.lost
        + stats.cancelled
    )
    return stats.calls == answered + stats.pending
