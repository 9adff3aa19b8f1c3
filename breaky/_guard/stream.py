"""A guarded stream: ``async with guard.stream(fn, *args) as items:``, one call.

A streamed response or a cursor is one call of the dependency that answers
in many items. The stream is admitted when the ``async with`` block is
entered (so OFF comes before the first item, as :exc:`breaky.BreakerOff`),
and ended once: exhausted (a reply), failed while iterating (an error,
judged as :meth:`breaky.Guard.run` judges one), or left early (cancelled,
never a failure). A trial is a whole iteration.

Why a block and not a bare async iterator: an ``async for`` left by
``break`` never closes its iterator; only a finalizer would, some time later,
and the trial or the bulkhead place it holds would leak until then. The
``async with`` block ends the stream when it is left, in the caller's task.

The timeout bounds each wait (for a place, then for each item), in a cancel
scope entered and left inside that one wait: nothing yields inside it, as
Trio requires, and the caller's own work between items is not the
dependency's time. The slow-call rule judges the longest wait for an item.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import trio

from breaky._core.admission import Outcome, Verdict
from breaky._core.errors import BreakerOff, CallTimeout
from breaky._guard.block import timeout_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable

    from typing_extensions import Self

    from breaky._core.admission import Admission
    from breaky._core.core import Core
    from breaky._core.policy import FromPolicy

T = TypeVar("T")


@final
class GuardedStream(Generic[T]):
    """One guarded iteration of ``fn(*args)``, an async iterable; used once."""

    __slots__ = (
        "_admission",
        "_args",
        "_core",
        "_entered",
        "_fn",
        "_items",
        "_longest",
        "_open",
        "_seconds",
    )

    def __init__(
        self,
        core: Core,
        fn: Callable[..., AsyncIterable[T]],
        args: tuple[object, ...],
        timeout: float | FromPolicy | None,
    ) -> None:
        self._core = core
        self._fn = fn
        self._args = args
        self._seconds = timeout_of(core, timeout)
        self._entered = False
        self._admission: Admission = Verdict.WAIT  # set when entered
        self._items: AsyncIterator[T] | None = None  # set when entered
        self._open = False  # admitted, and not ended yet
        self._longest = 0.0  # the longest wait for an item so far

    def __repr__(self) -> str:
        return f"<breaky guarded stream of {self._core.name!r}>"

    async def __aenter__(self) -> Self:
        if self._entered:
            msg = "a guarded stream is entered once: use guard.stream() for each"
            raise RuntimeError(msg)
        self._entered = True
        core = self._core
        admission = core.admit()
        if admission is Verdict.OFF or admission is Verdict.SHED:
            await core.refuse(admission)
            raise BreakerOff(core.name, shed=admission is Verdict.SHED)
        if admission is Verdict.WAIT:
            admission = await self._wait_for_place()
        try:
            items = self._iterate()
        except Exception:
            core.ended(admission, Outcome.WRONG_CALL)  # never a failure
            raise
        except BaseException:
            core.ended(admission, Outcome.CANCELLED)
            raise
        self._admission, self._items, self._open = admission, items, True
        return self

    def _iterate(self) -> AsyncIterator[T]:
        """``fn(*args)``'s async iterator; a TypeError if it made none."""
        fn = self._fn
        made: Any = fn(*self._args)
        if inspect.iscoroutine(made):
            made.close()  # no "never awaited" warning after the error
            msg = (
                f"{fn!r} returned a coroutine: stream() takes a function that "
                "returns an async iterable (an async generator function: async "
                "def with yield); guard a coroutine function with run()"
            )
            raise TypeError(msg)
        if not hasattr(made, "__aiter__"):
            msg = (
                f"{fn!r} returned {type(made).__name__}, not an async iterable: "
                "stream() takes an async generator function (async def with yield)"
            )
            raise TypeError(msg)
        items: AsyncIterator[T] = made.__aiter__()
        return items

    async def _wait_for_place(self) -> Admission:
        """Wait in line, within the timeout; the place, or BreakerOff."""
        core, seconds = self._core, self._seconds
        placed: Admission | None = None
        try:
            with trio.move_on_after(math.inf if seconds is None else seconds):
                placed = await core.wait_for_place()
        except BaseException:
            core.ended(Verdict.WAIT, Outcome.CANCELLED)
            raise
        if placed is None or placed is Verdict.OFF:
            # Its wait reached the timeout (shed: overload is no failure),
            # or the guard turned OFF while it waited (answered OFF).
            shed = placed is None
            core.ended(Verdict.WAIT, Outcome.SHED if shed else Outcome.TURNED_AWAY)
            raise BreakerOff(core.name, shed=shed)
        return placed

    def __aiter__(self) -> Self:
        if self._items is None:
            msg = (
                "a guarded stream is iterated inside its block: "
                "async with guard.stream(fn, *args) as items: async for item in items"
            )
            raise TypeError(msg)
        return self

    async def __anext__(self) -> T:
        if not self._open:
            self.__aiter__()  # a TypeError if it was never entered
            raise StopAsyncIteration
        items = self._items
        assert items is not None  # noqa: S101 - open means entered
        seconds = self._seconds
        began = trio.current_time()
        timed_out = False
        try:
            if seconds is None:
                item = await items.__anext__()
            else:
                with trio.move_on_after(seconds) as scope:
                    item = await items.__anext__()
                timed_out = scope.cancelled_caught
        except StopAsyncIteration:
            self._end(Outcome.REPLY, None, began)
            raise
        except Exception as exc:
            self._end(Outcome.ERROR, exc, began)
            raise
        except BaseException:
            self._end(Outcome.CANCELLED, None, began)  # never a failure
            raise
        if timed_out:
            error = CallTimeout(
                f"guard {self._core.name!r}: the stream's next item took longer "
                f"than its timeout ({seconds:g} s) and was cancelled"
            )
            self._end(Outcome.TIMEOUT, error, began)
            raise error
        self._longest = max(self._longest, trio.current_time() - began)
        return item  # pyright: ignore[reportPossiblyUnboundVariable, reportReturnType]

    def _end(self, outcome: Outcome, error: BaseException | None, began: float) -> None:
        """End the stream's call once; the slow rule sees its longest wait."""
        self._open = False
        now = trio.current_time()
        longest = max(self._longest, now - began)
        # The core judges now - ran_at: here, the longest wait for an item.
        self._core.ended(self._admission, outcome, error, now - longest)

    async def __aexit__(self, *_: object) -> bool:
        """Close the iterator (a generator's ``finally`` runs now) and end it."""
        items = self._items
        close = getattr(items, "aclose", None)
        try:
            if close is not None:
                await close()
        except Exception as exc:
            if self._open:  # its clean-up failed: the dependency's error
                self._end(Outcome.ERROR, exc, trio.current_time())
            raise
        finally:
            if self._open:  # left before its end: the caller stopped waiting
                self._open = False
                self._core.ended(self._admission, Outcome.CANCELLED)
        return False
