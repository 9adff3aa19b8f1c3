"""The resource's side of a breaker: a Trio receive channel of requests.

Each resource instance is given an :class:`Inbox` of its own over the
breaker's one mailbox. Closing it, or the instance ending, retires that handle
only: requests still queued wait in the mailbox for the next instance.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Generic, final

import trio

from breaky._core.functions import check_async_function
from breaky._core.policy import check_count

from .request import MessageT, ReplyT, Request

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .mailbox import Mailbox

_CLOSED = "this inbox was closed: use the inbox of a running instance"
_NOT_STARTED = (
    "the resource read its inbox before calling task_status.started(): call "
    "task_status.started() first, once it is ready to serve (a failed start)"
)


@final
class Instance:
    """One resource instance's life, as its inbox sees it."""

    __slots__ = ("ended", "started")

    def __init__(self) -> None:
        # It called task_status.started(): its inbox may hand out requests.
        self.started = False
        # It has ended: its inbox hands out nothing more.
        self.ended = False


@final
class Inbox(
    trio.abc.ReceiveChannel[Request[MessageT, ReplyT]], Generic[MessageT, ReplyT]
):
    """The requests for one resource instance: a :class:`trio.abc.ReceiveChannel`.

    Take requests with ``async for request in inbox``, ``await
    inbox.receive()`` or ``inbox.receive_nowait()``, or hand each to a handler
    with :meth:`serve`; answer each with ``request.reply()`` or
    ``request.fail()``. Several tasks of one instance may take from it at
    once; each request goes to one of them and belongs to that instance.

    When the breaker stops, or this instance has ended, :meth:`receive` raises
    :exc:`trio.EndOfChannel` (and ``async for`` ends). Closing the inbox
    (:meth:`aclose`) retires this handle only: requests still queued are
    served by the next instance, never lost.
    """

    __slots__ = ("_closed", "_instance", "_mailbox")

    def __init__(self, mailbox: Mailbox[MessageT, ReplyT], instance: Instance) -> None:
        self._mailbox = mailbox
        self._instance = instance
        self._closed = False  # aclose() was called

    def __repr__(self) -> str:
        mailbox = self._mailbox
        return f"<breaky.Inbox of {mailbox.name!r}: {mailbox.queued} queued>"

    def receive_nowait(self) -> Request[MessageT, ReplyT]:
        """Take the oldest queued request without waiting.

        Lets a resource gather what is queued into one batch.

        Raises:
            trio.WouldBlock: nothing is queued.
            trio.EndOfChannel: the breaker stopped, or this instance ended.
            trio.ClosedResourceError: this inbox was closed.

        """
        self._check_open()
        if not self._instance.started:
            raise RuntimeError(_NOT_STARTED)
        request = self._mailbox.take()
        if request is None:
            raise trio.WouldBlock
        return request

    async def receive(self) -> Request[MessageT, ReplyT]:
        """Take the oldest queued request, waiting for one if none is queued.

        Raises:
            trio.EndOfChannel: the breaker stopped, or this instance ended.
            trio.ClosedResourceError: this inbox was closed.

        """
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise trio.EndOfChannel from None

    async def __anext__(self) -> Request[MessageT, ReplyT]:
        # receive() is built on this rather than the other way round, as
        # trio.abc.ReceiveChannel does: ``async for`` is the hot path.
        mailbox = self._mailbox
        instance = self._instance
        if not instance.started and not (
            self._closed or instance.ended or mailbox.closed
        ):
            raise RuntimeError(_NOT_STARTED)
        if mailbox.queued:
            # Serving a backlog must still let other tasks run.
            await trio.lowlevel.checkpoint()
        while True:
            if self._closed or instance.ended or mailbox.closed:
                if self._closed:
                    raise trio.ClosedResourceError(_CLOSED)
                raise StopAsyncIteration
            request = mailbox.take()
            if request is not None:
                return request
            task = trio.lowlevel.current_task()
            mailbox.receivers.append(task)

            def abort(
                _: object, task: trio.lowlevel.Task = task
            ) -> trio.lowlevel.Abort:
                mailbox.receivers.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            try:
                # Woken, but cancelled since (say, a sibling task crashed the
                # instance): take nothing, and pass the wake-up on.
                await trio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                mailbox.wake_receiver()
                raise

    async def aclose(self) -> None:
        """Close this handle; queued requests stay for the next instance."""
        self._close()
        await trio.lowlevel.checkpoint()

    async def serve(
        self,
        handler: Callable[[Request[MessageT, ReplyT]], Awaitable[object]],
        *,
        concurrency: int = 1,
    ) -> None:
        """Run ``await handler(request)`` for each request, ``concurrency`` at once.

        Returns when the inbox ends (the breaker stopped) and every handler
        has returned. The handler answers its request with ``reply()`` or
        ``fail()``. An exception escaping a handler ends the others and comes
        out of ``serve()``, so it is a crash of this resource instance, as it
        would be in an ``async for`` loop: the requests still held get
        :exc:`breaky.ResourceLost`. When several handlers raise at once, they
        come out in an :exc:`ExceptionGroup`.

        Raises:
            TypeError: ``handler`` is not an async function, or
                ``concurrency`` is not an int.
            ValueError: ``concurrency`` is below 1.

        """
        check_async_function(
            handler,
            what="handler must be",
            shape="taking a request (async def handler(request))",
        )
        check_count("concurrency", concurrency, minimum=1)
        errors: list[Exception] = []
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(self._work, handler, errors, nursery.cancel_scope)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            msg = f"{len(errors)} handlers of breaker {self._mailbox.name!r} raised"
            raise ExceptionGroup(msg, errors)

    async def _work(
        self,
        handler: Callable[[Request[MessageT, ReplyT]], Awaitable[object]],
        errors: list[Exception],
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for request in self:
                await handler(request)
        except Exception as exc:  # noqa: BLE001 - handed to serve() to raise
            errors.append(exc)
            scope.cancel()

    # breaky's side.

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(_CLOSED)
        if self._instance.ended or self._mailbox.closed:
            raise trio.EndOfChannel

    def _close(self) -> None:
        self._closed = True
        # Its parked tasks must see it; any others just park again.
        self._mailbox.wake_all_receivers()
