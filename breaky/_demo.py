"""``python -m breaky demo``: a flaky resource trips the breaker OFF and recovers."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

import attrs
import trio

from ._off import OFF
from ._supervisor import open_supervisor

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker
    from ._inbox import Inbox


@attrs.define
class _Outside:
    """The world the resource depends on, and what the callers saw."""

    down: bool = False

    def check(self, what: type[OSError]) -> None:
        """Raise ``what`` while the outside is down."""
        if self.down:
            raise what

    calls: int = 0
    replies: int = 0
    off: int = 0
    errors: int = 0


class _Narrator(logging.Handler):
    """Print breaky's log records and the demo's own news, one line each."""

    def __init__(self, out: TextIO, start: float) -> None:
        super().__init__()
        self.out = out
        self.start = start

    def say(self, text: str) -> None:
        elapsed = trio.current_time() - self.start
        print(f"{elapsed:5.2f}s  {text}", file=self.out)

    def emit(self, record: logging.LogRecord) -> None:
        self.say(record.getMessage())


async def _database(
    inbox: Inbox[str, str],
    outside: _Outside,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A pretend database connection: it fails whenever the outside is down."""
    await trio.sleep(0.01)  # connecting
    outside.check(ConnectionRefusedError)
    task_status.started("connection #1")
    async for request in inbox:
        outside.check(ConnectionResetError)
        await trio.sleep(0.001)  # the query
        request.reply(f"rows for {request.message!r}")


async def _caller(
    db: CircuitBreaker[str, str], outside: _Outside, stop: trio.Event
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        outside.calls += 1
        try:
            answer = await db.call(f"select {n}")
        except Exception:  # noqa: BLE001 - the demo counts every kind of answer
            outside.errors += 1
        else:
            if answer is OFF:
                outside.off += 1
            else:
                outside.replies += 1
        await trio.sleep(0.02)


async def demo(out: TextIO | None = None) -> int:
    """Run the demo, printing to ``out`` (stdout); return the exit status."""
    stream = sys.stdout if out is None else out
    outside = _Outside()
    handler = _Narrator(stream, trio.current_time())
    logger = logging.getLogger("breaky")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        print("a database goes down for 1.5 s and comes back", file=stream)
        async with open_supervisor(shutdown_timeout=1.0) as sup:
            db = await sup.start_circuit_breaker(
                "db", _database, outside, failure_threshold=3, retry_timeout=0.5
            )
            stop = trio.Event()
            async with trio.open_nursery() as callers:
                for _ in range(3):
                    callers.start_soon(_caller, db, outside, stop)
                await trio.sleep(1.0)
                handler.say("the database goes down")
                outside.down = True
                await trio.sleep(1.5)
                handler.say("the database is back")
                outside.down = False
                await trio.sleep(1.0)
                stop.set()
    finally:
        logger.removeHandler(handler)
    answered = outside.replies + outside.off + outside.errors
    print(
        f"calls: {outside.calls}, replies: {outside.replies}, OFF: {outside.off}, "
        f"errors: {outside.errors}, unanswered: {outside.calls - answered}",
        file=stream,
    )
    return 0 if answered == outside.calls and outside.off > 0 else 1
