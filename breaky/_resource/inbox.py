"""The resource's side of a breaker: a Trio receive channel of requests.

Each resource instance is given an :class:`Inbox` of its own over the
breaker's one mailbox. Closing it, or the instance ending, retires that handle
only: requests still queued wait in the mailbox for the next instance.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import trio

from breaky._core.adaptive import Adaptive
from breaky._core.checks import check_count
from breaky._core.functions import check_async_function
from breaky._core.places import Fixed, Places, limit_for

from .request import Envelope, MessageT, ReplyT, Request

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import CoroutineType

    from .mailbox import Mailbox

T = TypeVar("T")

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
class InstanceStatus(trio.TaskStatus[Any]):
    """The ``task_status`` a resource instance reports its start through."""

    __slots__ = ("_instance", "_on_started", "called")

    def __init__(
        self, on_started: Callable[[object], None], instance: Instance
    ) -> None:
        self._on_started = on_started
        self._instance = instance
        self.called = False

    def started(self, value: Any = None) -> None:  # noqa: ANN401 - any resource
        if self.called:
            msg = "task_status.started() was already called by this resource"
            raise RuntimeError(msg)
        if self._instance.ended:
            msg = "task_status.started() of a resource instance that has ended"
            raise RuntimeError(msg)
        self.called = True
        self._instance.started = True
        self._on_started(value)


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
        envelope = self._mailbox.take()
        if envelope is None:
            raise trio.WouldBlock
        return Request(envelope)

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

    def __anext__(self) -> CoroutineType[Any, Any, Request[MessageT, ReplyT]]:
        # receive() is built on this rather than the other way round, as
        # trio.abc.ReceiveChannel does: ``async for`` is the hot path, so it
        # awaits the one loop itself, with no coroutine frame around it.
        return self._next(Request)  # type: ignore[return-value]  # pyright: ignore[reportUnknownVariableType]

    async def _next(self, given: Callable[[Envelope], T]) -> T:
        """The next request (``given`` its envelope), waiting for one.

        Raises at the end of the inbox, as ``__anext__`` does.
        """
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
            envelope = mailbox.take()
            if envelope is not None:
                return given(envelope)
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
        concurrency: int | Adaptive = 1,
    ) -> None:
        """Run ``await handler(request)`` for each request, ``concurrency`` at once.

        Returns when the inbox ends (the breaker stopped) and every handler
        has returned. The handler answers its request with ``reply()`` or
        ``fail()``. An exception escaping a handler ends the others and comes
        out of ``serve()``, so it is a crash of this resource instance, as it
        would be in an ``async for`` loop: the requests still held get
        :exc:`breaky.ResourceLost`. When several handlers raise at once, they
        come out in an :exc:`ExceptionGroup`.

        ``concurrency`` is a number, or a :class:`breaky.Adaptive` limit
        learned from the handlers' latency (from taking a request to the
        handler's return; a request failed with an exception that counts as
        a failure is a drop). Requests beyond the limit wait in the breaker's
        inbox, where ``max_queued`` sheds the excess. The breaker's
        ``statistics().concurrency_limit`` is the limit now.

        Raises:
            TypeError: ``handler`` is not an async function, or
                ``concurrency`` is not an int or a breaky.Adaptive.
            ValueError: ``concurrency`` is below 1.

        """
        check_async_function(
            handler,
            what="handler must be",
            shape="taking a request (async def handler(request))",
        )
        if not isinstance(concurrency, Adaptive):
            try:
                check_count("concurrency", concurrency, minimum=1)
            except TypeError:
                msg = (
                    "concurrency must be an int >= 1 or a breaky.Adaptive, "
                    f"got {concurrency!r}"
                )
                raise TypeError(msg) from None
        limit = limit_for(concurrency)
        errors: list[Exception] = []
        mailbox = self._mailbox
        mailbox.limits.append(limit)
        try:
            async with trio.open_nursery() as nursery:
                if isinstance(limit, Fixed):
                    # A fixed number of workers, each taking the next request.
                    for _ in range(limit.current):
                        nursery.start_soon(
                            self._work, handler, errors, nursery.cancel_scope
                        )
                else:
                    await self._dispatch(handler, Places(limit, None), errors, nursery)
        finally:
            mailbox.limits.remove(limit)
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

    async def _dispatch(
        self,
        handler: Callable[[Request[MessageT, ReplyT]], Awaitable[object]],
        places: Places,
        errors: list[Exception],
        nursery: trio.Nursery,
    ) -> None:
        """Take a place, then a request, and hand it to a handler task; repeat.

        The place comes first, so that requests beyond the limit wait in the
        inbox (for the next instance too, and under ``max_queued``).
        """
        try:
            while True:
                if not places.take_nowait():
                    await places.wait()  # never turned away: nothing calls it
                try:
                    envelope = await self._next(_itself)
                except BaseException:
                    places.give_back()
                    raise
                nursery.start_soon(
                    self._handle,
                    handler,
                    envelope,
                    places,
                    errors,
                    nursery.cancel_scope,
                )
        except StopAsyncIteration:
            return
        except Exception as exc:  # noqa: BLE001 - handed to serve() to raise
            errors.append(exc)
            nursery.cancel_scope.cancel()

    async def _handle(
        self,
        handler: Callable[[Request[MessageT, ReplyT]], Awaitable[object]],
        envelope: Envelope,
        places: Places,
        errors: list[Exception],
        scope: trio.CancelScope,
    ) -> None:
        since = trio.current_time()
        try:
            await handler(Request(envelope))
        except Exception as exc:  # noqa: BLE001 - handed to serve() to raise
            places.give_back()
            errors.append(exc)
            scope.cancel()
            return
        except BaseException:
            places.give_back()
            raise
        places.give_back(since, dropped=envelope.strained)

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


def _itself(envelope: Envelope) -> Envelope:
    return envelope
