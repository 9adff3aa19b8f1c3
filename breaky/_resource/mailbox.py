"""The breaker's mailbox: queued requests, the calls held, call deadlines.

The mailbox belongs to the breaker, not to one resource instance: requests
queued while the resource restarts are served by the next instance, through
the :class:`~breaky.Inbox` handle that instance is given. Callers park with
``trio.lowlevel`` and are woken with their answer, so a call costs no channel,
no event and no cancel scope of its own; the deadlines of all calls are kept
in one heap watched by one task (:mod:`breaky._resource.deadlines`). How each
call ended is counted and judged by the breaker's core.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Generic, final

import attrs
import trio

from breaky._core.admission import Outcome, Verdict
from breaky._core.errors import CallTimeout, ResourceLost
from breaky._core.off import OFF
from breaky._resource.deadlines import Deadlines
from breaky._resource.request import (
    QUEUED,
    SETTLED,
    TAKEN,
    Envelope,
    MessageT,
    ReplyT,
)

if TYPE_CHECKING:
    from breaky._core.core import Core
    from breaky._core.places import Limit
    from breaky._core.policy import Policy

_CALL = Verdict.CALL


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
    _queue: deque[Envelope] = attrs.field(init=False, factory=deque[Envelope])
    # Requests in the queue not yet taken nor withdrawn (calls and casts).
    queued: int = attrs.field(init=False, default=0)
    # Calls the running resource instance has taken and not answered.
    held: set[Envelope] = attrs.field(init=False, factory=set[Envelope])
    # Resource tasks parked waiting for a request.
    receivers: deque[trio.lowlevel.Task] = attrs.field(
        init=False, factory=deque[trio.lowlevel.Task]
    )
    # The breaker stopped: no request will come any more.
    closed: bool = attrs.field(init=False, default=False)
    _deadlines: Deadlines[Envelope] = attrs.field(init=False)
    # Ends the deadline keeper; cancellable before its task has even started.
    _keeper_done: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    # Trio's clock, asked directly: trio.current_time() costs two more calls.
    _clock: trio.abc.Clock = attrs.field(
        init=False, factory=trio.lowlevel.current_clock
    )
    # The limits of the inbox.serve() calls serving now (for statistics).
    limits: list[Limit] = attrs.field(init=False, factory=list["Limit"])

    def __attrs_post_init__(self) -> None:
        self._deadlines = Deadlines(_pending, self._expire)

    def pending_calls(self) -> int:
        """Calls queued or held, not answered yet (casts are not counted)."""
        return len(self.held) + sum(
            1 for e in self._queue if e.phase is QUEUED and e.caller is not None
        )

    def concurrency_limit(self) -> int | None:
        """The limits of the serve() calls serving now, summed; or ``None``."""
        limits = self.limits
        return sum(limit.current for limit in limits) if limits else None

    # The resource's side.

    def take(self) -> Envelope | None:
        """The oldest queued request, now taken; ``None`` if none is queued."""
        if not self.queued:
            return None
        queue = self._queue
        while True:
            # Withdrawn requests stay in the queue until they are skipped here.
            envelope = queue.popleft()
            if envelope.phase is QUEUED:
                envelope.phase = TAKEN
                self.queued -= 1
                if envelope.caller is not None:
                    self.held.add(envelope)
                return envelope

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
    ) -> Envelope | None:
        """Queue a request and wake a parked resource task to take it.

        Returns ``None``, queueing nothing, when ``max_queued`` requests wait
        already: the request is shed.
        """
        limit = self._policy.max_queued
        if limit is not None and self.queued >= limit:
            return None
        envelope = Envelope(message, self, caller)
        self._queue.append(envelope)
        self.queued += 1
        if self.receivers:
            trio.lowlevel.reschedule(self.receivers.popleft())
        if caller is not None and (
            timeout is not None or self._policy.slow_call_duration is not None
        ):
            now = envelope.sent_at = self._clock.current_time()
            if timeout is not None:
                pending = len(self._queue) + len(self.held)
                self._deadlines.watch(now + timeout, envelope, pending)
        return envelope

    # The Ledger the requests report to.

    def answered(
        self,
        envelope: Envelope,
        value: object,
        error: Exception | None,
    ) -> None:
        """The resource answered a request it took (reply or fail)."""
        core = self._core
        if envelope.caller is None:
            # A cast: nobody waits and it is no call, but its error may count.
            envelope.settle(value, error)
            core.cast_ended(error)
            return
        self.held.discard(envelope)
        envelope.settle(value, error)
        # The caller has its answer; now the breaker may react (even trip).
        if error is None:
            core.replied(envelope.sent_at)
        else:
            envelope.strained = core.ended(
                _CALL, Outcome.ERROR, error, envelope.sent_at
            )

    def withdrawn(self, envelope: Envelope) -> None:
        """A caller was cancelled; a queued request will be skipped."""
        if envelope.phase is QUEUED:
            self.queued -= 1
        else:
            self.held.discard(envelope)
        self._core.ended(_CALL, Outcome.CANCELLED)

    # The breaker's side.

    def reject_queued(self) -> None:
        """Answer every queued request OFF: none of them will be served."""
        queue = self._queue
        core = self._core
        while queue:
            envelope = queue.popleft()
            if envelope.phase is QUEUED:
                if envelope.caller is not None:
                    core.ended(_CALL, Outcome.TURNED_AWAY)
                envelope.settle(OFF)
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
        self._core.lost(len(held))
        for envelope in held:
            lost = ResourceLost(
                f"the resource of breaker {self.name!r} ended "
                "while it held this request"
            )
            lost.__cause__ = cause
            envelope.settle(None, lost)

    # Call deadlines.

    async def keep_deadlines(self) -> None:
        """Answer CallTimeout to each call whose deadline passes; until stopped.

        Each counts one failure.
        """
        with self._keeper_done:
            await self._deadlines.keep()

    def _expire(self, envelope: Envelope, now: float) -> None:  # noqa: ARG002
        if envelope.phase is QUEUED:
            self.queued -= 1
        else:
            self.held.discard(envelope)
        error = CallTimeout(
            f"breaker {self.name!r} did not answer before the call's timeout"
        )
        envelope.settle(None, error)
        self._core.ended(_CALL, Outcome.TIMEOUT, error)

    def deadlines_kept(self) -> int:
        """How many call deadlines are kept now (answered ones included)."""
        return len(self._deadlines)

    def stop_keeping_deadlines(self) -> None:
        """End :meth:`keep_deadlines`: nothing is pending any more."""
        self._keeper_done.cancel()


def _pending(envelope: Envelope) -> bool:
    return envelope.phase is not SETTLED
