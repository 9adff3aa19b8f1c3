"""A bulkhead line: at most so many calls at once, a few more waiting in order.

How many places there are is a policy of admission, a :class:`Limit`: a fixed
number, or one learned from latency (:class:`~breaky._core.adaptive.Adaptive`).
A call that held a place tells the line, when it gives the place back, when
it got it and whether it was dropped; the line passes that on as a sample.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, final

import trio

from .adaptive import Adaptive


class Limit(Protocol):
    """How many calls may hold a place at once, and what it learns from them."""

    @property
    def current(self) -> int:
        """The limit now."""
        ...  # pragma: no cover - a protocol

    def sample(
        self, now: float, latency: float, in_flight: int, *, dropped: bool
    ) -> None:
        """A call held a place for ``latency`` seconds, ending at ``now``.

        ``in_flight`` places were held then, its own included; ``dropped``:
        it timed out, or failed in a way that counts.
        """
        ...  # pragma: no cover - a protocol


@final
class Fixed:
    """A limit that never changes: ``max_concurrent=N``."""

    __slots__ = ("current",)

    def __init__(self, limit: int) -> None:
        self.current = limit

    def sample(
        self, now: float, latency: float, in_flight: int, *, dropped: bool
    ) -> None:
        """Learn nothing."""


def limit_for(spec: int | Adaptive) -> Limit:
    """The limit a policy's ``max_concurrent`` (or ``concurrency=``) describes."""
    if isinstance(spec, Adaptive):
        return spec.start()
    return Fixed(spec)


@final
class Places:
    """Places for running calls, as many as its limit; up to ``max_waiting`` wait.

    A freed place is handed to the longest-waiting call, so a newcomer never
    overtakes one that waits. A caller cancelled while waiting leaves the
    line; one that got a place gives it back with :meth:`give_back`. A limit
    that rises hands places to waiting calls at once; one that falls takes
    effect as places are given back.
    """

    __slots__ = ("_learning", "_limit", "_max_waiting", "_size", "_used", "_waiting")

    def __init__(self, limit: int | Adaptive | Limit, max_waiting: int | None) -> None:
        if isinstance(limit, int | Adaptive):
            limit = limit_for(limit)
        self._limit = limit
        # Only a limit that learns is told of each call (and needs the clock).
        self._learning = None if isinstance(limit, Fixed) else limit
        self._size = limit.current
        self._used = 0
        self._max_waiting = max_waiting
        self._waiting: deque[_Waiter] = deque()

    @property
    def limit(self) -> int:
        """How many calls may hold a place now."""
        return self._size

    @property
    def taken(self) -> int:
        """The places taken now."""
        return self._used

    @property
    def waiting(self) -> int:
        """The calls waiting in line for a place now."""
        return len(self._waiting)

    def take_nowait(self) -> bool:
        """Take a free place if there is one and nobody waits for it."""
        if self._used < self._size and not self._waiting:
            self._used += 1
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

    def give_back(self, since: float | None = None, *, dropped: bool = False) -> None:
        """A call that had a place is done: hand it on, or free it.

        ``since`` is when the call got its place, if it ran and was answered
        (a reply, an error, a timeout): the limit learns from it. ``None``
        teaches nothing: the call never ran, or its caller was cancelled.
        ``dropped``: it timed out, or failed in a way that counts.
        """
        learning = self._learning
        if learning is not None and since is not None:
            now = trio.current_time()
            learning.sample(now, now - since, self._used, dropped=dropped)
            self._size = learning.current
        self._used -= 1
        waiting = self._waiting
        while waiting and self._used < self._size:
            waiter = waiting.popleft()
            waiter.handed = True
            self._used += 1
            trio.lowlevel.reschedule(waiter.task)

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
