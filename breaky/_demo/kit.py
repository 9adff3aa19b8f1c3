"""What both demos do alike: call and count the answers, and say what happens."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, TextIO

import trio

from breaky import OFF, CallTimeout, ResourceLost

from .kv import KVError

if TYPE_CHECKING:
    import collections
    from collections.abc import Callable, Generator

    from breaky import CircuitBreaker, StateChanges

ANSWER_KINDS: dict[type[Exception], str] = {
    ResourceLost: "lost",
    CallTimeout: "timeout",
    KVError: "error",
}


async def call_and_count(
    db: CircuitBreaker[str, Any], command: str, answers: collections.Counter[str]
) -> None:
    """Make one call and count its answer by kind: reply, OFF, lost, timeout..."""
    try:
        answer = await db.call(command)
    except Exception as exc:  # noqa: BLE001 - the demos count every kind
        answers[ANSWER_KINDS.get(type(exc), type(exc).__name__)] += 1
    else:
        answers["OFF" if answer is OFF else "reply"] += 1


def timestamped(stream: TextIO, start: float) -> Callable[[str], None]:
    """A ``say(text)`` that prints ``text`` after the seconds since ``start``."""

    def say(text: str) -> None:
        print(f"{trio.current_time() - start:6.2f}s  {text}", file=stream)

    return say


async def narrate(
    changes: StateChanges, say: Callable[[str], None], *, names: bool = False
) -> None:
    """Say each change, ``OLD -> NEW (reason)``, after the breaker's name."""
    async for change in changes:
        name = f"breaker {change.breaker!r}: " if names else ""
        say(f"{name}{change.old.name} -> {change.new.name} ({change.reason})")


class _LogLines(logging.Handler):
    def __init__(self, say: Callable[[str], None], keep: Callable[[str], bool]) -> None:
        super().__init__()
        self._say = say
        self._keep = keep

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self._keep(message):
            self._say(message)


@contextlib.contextmanager
def log_lines(
    say: Callable[[str], None],
    level: int,
    keep: Callable[[str], bool] = lambda _: True,
) -> Generator[None]:
    """Say breaky's records from ``level`` up that ``keep`` accepts.

    One line each, without tracebacks; ``breaky``'s level is restored after.
    """
    logger = logging.getLogger("breaky")
    handler = _LogLines(say, keep)
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
