"""A guard's bulkhead: at most so many calls at once, a few more waiting in order."""

from __future__ import annotations

from collections import deque
from typing import final

import trio


@final
class Places:
    """``limit`` places for running calls; up to ``max_waiting`` wait for one.

    A freed place is handed to the longest-waiting call, so a newcomer never
    overtakes one that waits. A caller cancelled while waiting leaves the
    line; one that got a place gives it back with :meth:`give_back`.
    """

    __slots__ = ("_free", "_limit", "_max_waiting", "_waiting")

    def __init__(self, limit: int, max_waiting: int | None) -> None:
        self._limit = limit
        self._free = limit
        self._max_waiting = max_waiting
        self._waiting: deque[_Waiter] = deque()

    @property
    def taken(self) -> int:
        """The places taken now."""
        return self._limit - self._free

    @property
    def waiting(self) -> int:
        """The calls waiting in line for a place now."""
        return len(self._waiting)

    def take_nowait(self) -> bool:
        """Take a free place if there is one and nobody waits for it."""
        if self._free and not self._waiting:
            self._free -= 1
            return True
        return False

    @property
    def line_full(self) -> bool:
        """Whether a new call must be shed rather than wait."""
        limit = self._max_waiting
        return limit is not None and len(self._waiting) >= limit

    async def wait(self) -> bool:
        """Wait in line for a place: ``True`` once handed one (then owned).

        ``False`` if the line was turned away (:meth:`turn_away`) instead.
        """
        waiter = _Waiter(trio.lowlevel.current_task())
        waiting = self._waiting
        waiting.append(waiter)

        def abort(_: object) -> trio.lowlevel.Abort:
            waiting.remove(waiter)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return waiter.handed

    def give_back(self) -> None:
        """A call that had a place is done: hand it on, or free it."""
        if self._waiting:
            waiter = self._waiting.popleft()
            waiter.handed = True
            trio.lowlevel.reschedule(waiter.task)
        else:
            self._free += 1

    def turn_away(self) -> None:
        """Send every call in line away without a place (the guard turned OFF)."""
        waiting = self._waiting
        while waiting:
            trio.lowlevel.reschedule(waiting.popleft().task)


@final
class _Waiter:
    """A call in line, and whether it was handed a place when woken."""

    __slots__ = ("handed", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.handed = False
