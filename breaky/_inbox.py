"""The breaker's inbox: queued requests, the resource's side, call deadlines.

The inbox belongs to the breaker, not to one resource instance: requests queued
while the resource restarts are served by the next instance. Callers park with
``trio.lowlevel`` and are woken with their answer, so a call costs no channel,
no event and no cancel scope of its own; the deadlines of all calls are kept
here, in one heap watched by one task.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from typing import TYPE_CHECKING, Generic, final

import attrs
import trio

from ._errors import CallTimeout, ResourceLost
from ._off import OFF
from ._request import QUEUED, SETTLED, TAKEN, MessageT, ReplyT, Request

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._policy import Policy
    from ._statistics import Totals

# Compact the deadline heap when it holds more than this many settled entries
# beyond twice the pending ones: memory stays bounded, cost stays O(1) per call.
_SLACK = 64


@final
@attrs.define(eq=False, repr=False)
class Inbox(Generic[MessageT, ReplyT]):
    """The requests for one breaker's resource, in the order they were made.

    The resource iterates over it with ``async for request in inbox``; each
    item is a :class:`breaky.Request`. The iteration ends when the breaker is
    stopped. Several tasks of one resource may iterate over it at once; each
    request goes to one of them.
    """

    _name: str
    _policy: Policy
    _totals: Totals
    # Tells the breaker of one failure, with the reason.
    _failed: Callable[[str], None]
    _queue: deque[Request[MessageT, ReplyT]] = attrs.field(
        init=False, factory=deque[Request[MessageT, ReplyT]]
    )
    # Calls the running resource instance has taken and not answered.
    _held: set[Request[MessageT, ReplyT]] = attrs.field(
        init=False, factory=set[Request[MessageT, ReplyT]]
    )
    # Resource tasks parked waiting for a request.
    _receivers: deque[trio.lowlevel.Task] = attrs.field(
        init=False, factory=deque[trio.lowlevel.Task]
    )
    _closed: bool = attrs.field(init=False, default=False)
    # (deadline, tie-breaker, request); settled entries are dropped lazily.
    _deadlines: list[tuple[float, int, Request[MessageT, ReplyT]]] = attrs.field(
        init=False, factory=list[tuple[float, int, Request[MessageT, ReplyT]]]
    )
    _tie: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    # The deadline keeper's wait for the earliest deadline, while it waits.
    _keeper: trio.CancelScope | None = attrs.field(init=False, default=None)
    # Ends the keeper; cancellable before the keeper task has even started.
    _keeper_done: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    def __repr__(self) -> str:
        return f"<breaky.Inbox of {self._name!r}: {len(self._queue)} queued>"

    # The resource's side.

    def __aiter__(self) -> Inbox[MessageT, ReplyT]:
        return self

    async def __anext__(self) -> Request[MessageT, ReplyT]:
        if self._queue:
            # Serving a backlog must still let other tasks run.
            await trio.lowlevel.checkpoint()
        while True:
            request = self._take()
            if request is not None:
                return request
            if self._closed:
                raise StopAsyncIteration
            task = trio.lowlevel.current_task()
            self._receivers.append(task)

            def abort(
                _: object, task: trio.lowlevel.Task = task
            ) -> trio.lowlevel.Abort:
                self._receivers.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            try:
                # Woken, but cancelled since (say, a sibling task crashed the
                # instance): take nothing, and pass the wake-up on.
                await trio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                if self._queue and self._receivers:
                    trio.lowlevel.reschedule(self._receivers.popleft())
                raise

    def _take(self) -> Request[MessageT, ReplyT] | None:
        queue = self._queue
        while queue:
            request = queue.popleft()
            if request._phase is QUEUED:
                request._phase = TAKEN
                if request._caller is not None:
                    self._held.add(request)
                return request
        return None

    # The callers' side.

    def _put(
        self,
        message: MessageT,
        caller: trio.lowlevel.Task | None,
        timeout: float | None,
    ) -> Request[MessageT, ReplyT]:
        """Queue a request and wake a parked resource task to take it."""
        request = Request(message, self, caller)
        self._queue.append(request)
        if self._receivers:
            trio.lowlevel.reschedule(self._receivers.popleft())
        if caller is not None and (
            timeout is not None or self._policy.slow_call_duration is not None
        ):
            now = request._sent_at = trio.current_time()
            if timeout is not None:
                self._watch(now + timeout, request)
        return request

    def _answer(
        self,
        request: Request[MessageT, ReplyT],
        value: object,
        error: Exception | None,
    ) -> None:
        """The resource answered a request it took (reply or fail)."""
        slow = False
        if request._caller is not None:
            totals = self._totals
            if error is None:
                totals.replies += 1
            else:
                totals.errors += 1
            limit = self._policy.slow_call_duration
            if limit is not None and trio.current_time() - request._sent_at > limit:
                totals.slow_calls += 1
                slow = True
        request._settle(value, error)
        # The caller has its answer; now the breaker may react (even trip).
        if slow:
            self._failed("a call was slow")
        if error is not None and self._policy.counts_as_failure(error):
            self._failed(f"a request failed with {type(error).__name__}")

    def _forget(self, request: Request[MessageT, ReplyT]) -> None:
        """Stop tracking a request that was answered or withdrawn."""
        self._held.discard(request)

    # The breaker's side.

    def _reject_queued(self) -> None:
        """Answer every queued request OFF: none of them will be served."""
        queue = self._queue
        while queue:
            request = queue.popleft()
            if request._phase is QUEUED:
                if request._caller is not None:
                    self._totals.off += 1
                request._settle(OFF)

    def _close(self) -> None:
        """End the resource's iteration; queued requests are answered OFF."""
        self._closed = True
        self._reject_queued()
        while self._receivers:
            trio.lowlevel.reschedule(self._receivers.popleft())

    def _lose_held(self, cause: Exception | None) -> None:
        """The resource instance ended: its unanswered calls get ResourceLost."""
        held = list(self._held)
        self._held.clear()
        self._totals.lost += len(held)
        for request in held:
            lost = ResourceLost(
                f"the resource of breaker {self._name!r} ended "
                "while it held this request"
            )
            lost.__cause__ = cause
            request._settle(None, lost)

    # Call deadlines.

    def _watch(self, deadline: float, request: Request[MessageT, ReplyT]) -> None:
        heap = self._deadlines
        heapq.heappush(heap, (deadline, next(self._tie), request))
        keeper = self._keeper
        if keeper is not None and deadline < keeper.deadline:
            keeper.deadline = deadline
        if len(heap) > 2 * (len(self._queue) + len(self._held)) + _SLACK:
            self._deadlines = [e for e in heap if e[2]._phase is not SETTLED]
            heapq.heapify(self._deadlines)

    async def _keep_deadlines(self) -> None:
        """Answer CallTimeout to each call whose deadline passes; until closed.

        Each counts one failure.
        """
        with self._keeper_done:
            while True:
                heap = self._deadlines
                with trio.CancelScope(
                    deadline=heap[0][0] if heap else math.inf
                ) as keeper:
                    self._keeper = keeper
                    await trio.sleep_forever()
                self._keeper = None
                self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            request = heapq.heappop(heap)[2]
            if request._phase is not SETTLED:
                request._settle(
                    None,
                    CallTimeout(
                        f"breaker {self._name!r} did not answer "
                        "before the call's timeout"
                    ),
                )
                self._totals.timeouts += 1
                self._failed("a call timed out")

    def _stop_keeping_deadlines(self) -> None:
        """End :meth:`_keep_deadlines`: nothing is pending any more."""
        self._keeper_done.cancel()
