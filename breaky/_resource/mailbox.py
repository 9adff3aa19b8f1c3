"""The breaker's mailbox: queued requests, the calls held, call deadlines.

The mailbox belongs to the breaker, not to one resource instance: requests
queued while the resource restarts are served by the next instance, through
the :class:`~breaky.Inbox` handle that instance is given. Callers park with
``trio.lowlevel`` and are woken with their answer, so a call costs no channel,
no event and no cancel scope of its own; the deadlines of all calls are kept
here, in one heap watched by one task.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, final

import attrs
import trio

from breaky._core.errors import CallTimeout, ResourceLost
from breaky._core.off import OFF

from .request import QUEUED, SETTLED, TAKEN, MessageT, ReplyT, Request

if TYPE_CHECKING:
    from breaky._core.core import Core
    from breaky._core.places import Limit
    from breaky._core.policy import Policy

# Compact the deadline heap when it holds more than this many settled entries
# beyond twice the pending ones: memory stays bounded, cost stays O(1) per call.
_SLACK = 64


@final
@attrs.define(eq=False, repr=False)
class Mailbox(Generic[MessageT, ReplyT]):
    """Every request of one breaker between its caller and its answer.

    It is the :class:`~breaky._resource.request.Ledger` its requests report to.
    """

    name: str
    _policy: Policy
    # The breaker's core: it counts, and judges what is a failure.
    _core: Core
    _queue: deque[Request[MessageT, ReplyT]] = attrs.field(
        init=False, factory=deque[Request[MessageT, ReplyT]]
    )
    # Requests in the queue not yet taken nor withdrawn (calls and casts).
    queued: int = attrs.field(init=False, default=0)
    # Calls the running resource instance has taken and not answered.
    held: set[Request[MessageT, ReplyT]] = attrs.field(
        init=False, factory=set[Request[MessageT, ReplyT]]
    )
    # Resource tasks parked waiting for a request.
    receivers: deque[trio.lowlevel.Task] = attrs.field(
        init=False, factory=deque[trio.lowlevel.Task]
    )
    # The breaker stopped: no request will come any more.
    closed: bool = attrs.field(init=False, default=False)
    # (deadline, tie-breaker, request); settled entries are dropped lazily.
    _deadlines: list[tuple[float, int, Request[MessageT, ReplyT]]] = attrs.field(
        init=False, factory=list[tuple[float, int, Request[MessageT, ReplyT]]]
    )
    _tie: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    # The deadline keeper's wait for the earliest deadline, while it waits,
    # and that deadline (read here rather than from the scope: it is faster).
    _keeper: trio.CancelScope | None = attrs.field(init=False, default=None)
    _keeper_deadline: float = attrs.field(init=False, default=math.inf)
    # Ends the keeper; cancellable before the keeper task has even started.
    _keeper_done: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    # Trio's clock, asked directly: trio.current_time() costs two more calls.
    _clock: trio.abc.Clock = attrs.field(
        init=False, factory=trio.lowlevel.current_clock
    )
    # Whether a reply needs no judging: no slow-call limit, no rate rule.
    _plain_replies: bool = attrs.field(init=False)
    # The limits of the inbox.serve() calls serving now (for statistics).
    limits: list[Limit] = attrs.field(init=False, factory=list["Limit"])

    def __attrs_post_init__(self) -> None:
        policy = self._policy
        self._plain_replies = (
            policy.slow_call_duration is None and policy.failure_rate is None
        )

    def pending_calls(self) -> int:
        """Calls queued or held, not answered yet (casts are not counted)."""
        return len(self.held) + sum(
            1 for r in self._queue if r._phase is QUEUED and r._caller is not None
        )

    def concurrency_limit(self) -> int | None:
        """The limits of the serve() calls serving now, summed; or ``None``."""
        limits = self.limits
        return sum(limit.current for limit in limits) if limits else None

    def strained(self, request: Request[Any, Any]) -> bool:
        """Whether ``request`` was answered with a failure that counts."""
        return request._strained

    # The resource's side.

    def take(self) -> Request[MessageT, ReplyT] | None:
        """The oldest queued request, now taken; ``None`` if none is queued."""
        if not self.queued:
            return None
        queue = self._queue
        while True:
            # Withdrawn requests stay in the queue until they are skipped here.
            request = queue.popleft()
            if request._phase is QUEUED:
                request._phase = TAKEN
                self.queued -= 1
                if request._caller is not None:
                    self.held.add(request)
                return request

    def wake_receiver(self) -> None:
        """Pass a wake-up on to the next parked resource task, if work waits."""
        if self.queued and self.receivers:
            trio.lowlevel.reschedule(self.receivers.popleft())

    def wake_all_receivers(self) -> None:
        """Wake every parked resource task, to look at its inbox again."""
        receivers = self.receivers
        while receivers:
            trio.lowlevel.reschedule(receivers.popleft())

    # The callers' side.

    def put(
        self,
        message: MessageT,
        caller: trio.lowlevel.Task | None,
        timeout: float | None,
    ) -> Request[MessageT, ReplyT] | None:
        """Queue a request and wake a parked resource task to take it.

        Returns ``None``, queueing nothing, when ``max_queued`` requests wait
        already: the request is shed.
        """
        limit = self._policy.max_queued
        if limit is not None and self.queued >= limit:
            return None
        request: Request[MessageT, ReplyT] = Request(message, self, caller)
        self._queue.append(request)
        self.queued += 1
        if self.receivers:
            trio.lowlevel.reschedule(self.receivers.popleft())
        if caller is not None and (
            timeout is not None or self._policy.slow_call_duration is not None
        ):
            now = request._sent_at = self._clock.current_time()
            if timeout is not None:
                self._watch(now + timeout, request)
        return request

    # The Ledger the requests report to.

    def answered(
        self,
        request: Request[Any, Any],
        value: object,
        error: Exception | None,
    ) -> None:
        """The resource answered a request it took (reply or fail)."""
        core = self._core
        if request._caller is None:
            # A cast: nobody waits and it is no call, but its error may count.
            request._settle(value, error)
            failed = error is not None and core.counts(error)
            core.outcome(
                f"a cast failed with {type(error).__name__}" if failed else None
            )
            return
        self.held.discard(request)
        if error is None and self._plain_replies:
            # The hot path: a reply with nothing to judge (no slow-call limit,
            # no rate rule), counted here rather than by core.judge().
            core.totals.replies += 1
            request._settle(value, None)
            return
        reason = core.judge(error, request._sent_at)
        request._strained = reason is not None
        request._settle(value, error)
        # The caller has its answer; now the breaker may react (even trip).
        core.outcome(reason)

    def withdrawn(self, request: Request[Any, Any]) -> None:
        """A caller was cancelled; a queued request will be skipped."""
        if request._phase is QUEUED:
            self.queued -= 1
        else:
            self.held.discard(request)
        self._core.totals.cancelled += 1

    # The breaker's side.

    def reject_queued(self) -> None:
        """Answer every queued request OFF: none of them will be served."""
        queue = self._queue
        while queue:
            request = queue.popleft()
            if request._phase is QUEUED:
                if request._caller is not None:
                    self._core.totals.off += 1
                request._settle(OFF)
        self.queued = 0

    def close(self) -> None:
        """No request will come any more; queued ones are answered OFF."""
        self.closed = True
        self.reject_queued()
        self.wake_all_receivers()

    def lose_held(self, cause: Exception | None) -> None:
        """The resource instance ended: its unanswered calls get ResourceLost."""
        held = list(self.held)
        self.held.clear()
        self._core.totals.lost += len(held)
        for request in held:
            lost = ResourceLost(
                f"the resource of breaker {self.name!r} ended "
                "while it held this request"
            )
            lost.__cause__ = cause
            request._settle(None, lost)

    # Call deadlines.

    def _watch(self, deadline: float, request: Request[MessageT, ReplyT]) -> None:
        heap = self._deadlines
        heapq.heappush(heap, (deadline, next(self._tie), request))
        if deadline < self._keeper_deadline and self._keeper is not None:
            self._keeper.deadline = self._keeper_deadline = deadline
        if len(heap) > 2 * (len(self._queue) + len(self.held)) + _SLACK:
            self._deadlines = [e for e in heap if e[2]._phase is not SETTLED]
            heapq.heapify(self._deadlines)

    async def keep_deadlines(self) -> None:
        """Answer CallTimeout to each call whose deadline passes; until stopped.

        Each counts one failure.
        """
        with self._keeper_done:
            while True:
                heap = self._deadlines
                # Answered calls need no watching: wait for a pending one.
                while heap and heap[0][2]._phase is SETTLED:
                    heapq.heappop(heap)
                deadline = heap[0][0] if heap else math.inf
                with trio.CancelScope(deadline=deadline) as keeper:
                    self._keeper, self._keeper_deadline = keeper, deadline
                    await trio.sleep_forever()
                self._keeper, self._keeper_deadline = None, math.inf
                self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            request = heapq.heappop(heap)[2]
            if request._phase is not SETTLED:
                if request._phase is QUEUED:
                    self.queued -= 1
                else:
                    self.held.discard(request)
                request._settle(
                    None,
                    CallTimeout(
                        f"breaker {self.name!r} did not answer "
                        "before the call's timeout"
                    ),
                )
                self._core.totals.timeouts += 1
                self._core.failed("a call timed out")

    def stop_keeping_deadlines(self) -> None:
        """End :meth:`keep_deadlines`: nothing is pending any more."""
        self._keeper_done.cancel()
