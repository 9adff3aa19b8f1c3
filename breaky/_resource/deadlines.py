"""The call deadlines of one breaker: one heap, watched by one task.

A call with a timeout costs one heap push, not a cancel scope of its own;
the keeper sleeps until the earliest deadline that still matters and asks
the mailbox to expire what has passed. Entries whose call was answered in
time are dropped lazily, and the heap is compacted when they pile up, so
memory stays bounded and the cost stays O(log n) a call.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Generic, TypeVar, final

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

# Compact the heap when it holds more than this many entries beyond twice
# the pending ones: memory stays bounded, cost stays O(1) per call.
_SLACK = 64


@final
class Deadlines(Generic[T]):
    """Deadlines of items; :meth:`keep` expires each item still pending at its own."""

    __slots__ = ("_expire", "_heap", "_keeper", "_keeper_deadline", "_pending", "_tie")

    def __init__(
        self, pending: Callable[[T], bool], expire: Callable[[T, float], None]
    ) -> None:
        # Whether an item still waits for its answer; what to do when its
        # deadline passes (it is still pending then).
        self._pending = pending
        self._expire = expire
        # (deadline, tie-breaker, item); answered items are dropped lazily.
        self._heap: list[tuple[float, int, T]] = []
        self._tie = itertools.count()
        # The keeper's wait for the earliest deadline, while it waits, and
        # that deadline (read here rather than from the scope: it is faster).
        self._keeper: trio.CancelScope | None = None
        self._keeper_deadline = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, deadline: float, item: T, pending: int) -> None:
        """Expire ``item`` at ``deadline``; ``pending``: the items pending now."""
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._tie), item))
        if deadline < self._keeper_deadline and self._keeper is not None:
            self._keeper.deadline = self._keeper_deadline = deadline
        if len(heap) > 2 * pending + _SLACK:
            alive = self._pending
            self._heap = [e for e in heap if alive(e[2])]
            heapq.heapify(self._heap)

    async def keep(self) -> None:
        """Expire each pending item whose deadline passes; runs until cancelled."""
        alive = self._pending
        while True:
            heap = self._heap
            # Answered items need no watching: wait for a pending one.
            while heap and not alive(heap[0][2]):
                heapq.heappop(heap)
            deadline = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=deadline) as keeper:
                self._keeper, self._keeper_deadline = keeper, deadline
                await trio.sleep_forever()
            self._keeper, self._keeper_deadline = None, math.inf
            now = trio.current_time()
            heap = self._heap
            while heap and heap[0][0] <= now:
                item = heapq.heappop(heap)[2]
                if alive(item):
                    self._expire(item, now)
