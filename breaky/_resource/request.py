"""One request on its way to a resource, and the one answer its caller gets.

A request knows nothing of the inbox it travels through: it reports to a
:class:`Ledger`, the small interface that the breaker's mailbox implements.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, NoReturn, Protocol, TypeVar, cast, final

import attrs
import trio

MessageT = TypeVar("MessageT")
ReplyT = TypeVar("ReplyT")


class Phase(enum.Enum):
    """Where a request is between its caller and the resource."""

    QUEUED = "queued"  # in the inbox; the caller may still withdraw it
    TAKEN = "taken"  # the resource holds it
    SETTLED = "settled"  # the caller has its answer (or withdrew)


QUEUED, TAKEN, SETTLED = Phase.QUEUED, Phase.TAKEN, Phase.SETTLED


class Ledger(Protocol):
    """What keeps track of requests: told when one is answered or withdrawn."""

    def answered(
        self, request: Request[Any, Any], value: object, error: Exception | None
    ) -> None:
        """The resource answered a request it took (reply or fail)."""

    def withdrawn(self, request: Request[Any, Any]) -> None:
        """A request's caller was cancelled before its answer came.

        Called before the request is settled, so its phase tells where it was.
        """


@final
@attrs.define(eq=False, repr=False)
class Request(Generic[MessageT, ReplyT]):
    """A message for the resource, answered with :meth:`reply` or :meth:`fail`.

    A request from ``cast()`` has no caller waiting: answering it is allowed and
    does nothing, so one loop can serve calls and casts alike. Each request is
    answered at most once.
    """

    message: MessageT
    """What the caller sent."""
    _ledger: Ledger
    # The parked caller, or None for a cast (and for a call once settled).
    _caller: trio.lowlevel.Task | None
    _phase: Phase = QUEUED
    _answered: bool = False  # by the resource: a second answer is a bug
    _value: Any = None
    _error: BaseException | None = None
    # When the call was made, if its timing matters (a timeout, slow calls).
    _sent_at: float = 0.0
    # A call settled: its caller is let go, and the repr still says "call".
    _was_call: bool = False
    # Answered with a failure that counts (a drop, for an adaptive limit).
    _strained: bool = False

    def __repr__(self) -> str:
        kind = "call" if self._caller is not None or self._was_call else "cast"
        return f"<breaky.Request {kind} {self.message!r} {self._phase.value}>"

    def reply(self, value: ReplyT) -> None:
        """Answer the caller with ``value``.

        Raises:
            RuntimeError: if this request was already answered.

        """
        if self._answered:
            self._answered_twice()
        self._answered = True
        if self._phase is TAKEN:
            self._ledger.answered(self, value, None)

    def fail(self, exception: Exception) -> None:
        """Answer the caller by raising ``exception`` in it.

        Raises:
            TypeError: if ``exception`` is not an ``Exception`` instance.
            RuntimeError: if this request was already answered.

        """
        if not isinstance(cast("object", exception), Exception):
            msg = (
                "Request.fail() expects an Exception instance, "
                f"got {exception!r} of type {type(exception).__name__}"
            )
            raise TypeError(msg)
        if self._answered:
            self._answered_twice()
        self._answered = True
        if self._phase is TAKEN:
            self._ledger.answered(self, None, exception)

    def _answered_twice(self) -> NoReturn:
        msg = f"{self!r} was already answered; a request takes one answer"
        raise RuntimeError(msg)

    # The rest is breaky's side of the request.

    def _settle(self, value: object, error: BaseException | None = None) -> None:
        """Give the caller its one answer and wake it.

        Only called while the request is QUEUED or TAKEN, by its ledger.
        """
        self._phase = SETTLED
        if self._caller is not None:
            self._value = value
            self._error = error
            trio.lowlevel.reschedule(self._caller)
            self._caller = None
            self._was_call = True

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        """Withdraw the request: its caller was cancelled while waiting.

        A queued request will be skipped by the inbox, so the resource never
        sees it; the answer to a taken one is dropped.
        """
        self._ledger.withdrawn(self)
        self._phase = SETTLED
        self._caller = None
        self._was_call = True
        return trio.lowlevel.Abort.SUCCEEDED

    def _outcome(self) -> Any:  # noqa: ANN401 - the caller's reply type
        """Return the reply, or raise the error, the caller was woken with."""
        error = self._error
        if error is None:
            return self._value
        self._error = None
        try:
            raise error
        finally:
            # Break the cycle traceback -> frame -> error.
            del error
