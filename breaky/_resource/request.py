"""One request on its way to a resource, and the one answer its caller gets.

A request has two sides. :class:`Envelope` is breaky's: where the request
is (queued, taken, settled), the parked caller and the answer it gets; the
mailbox keeps envelopes. :class:`Request` is the resource's: the message,
and :meth:`~Request.reply` / :meth:`~Request.fail`, which report to the
envelope's :class:`Ledger` (the breaker's mailbox).
"""

from __future__ import annotations

import enum
from typing import Any, Generic, NoReturn, Protocol, TypeVar, cast, final

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
        self, envelope: Envelope, value: object, error: Exception | None
    ) -> None:
        """The resource answered a request it took (reply or fail)."""

    def withdrawn(self, envelope: Envelope) -> None:
        """A request's caller was cancelled before its answer came.

        Called before the request is settled, so its phase tells where it was.
        """


@final
class Envelope:
    """breaky's side of one request: where it is, and its caller's answer."""

    __slots__ = (
        "answered",
        "caller",
        "error",
        "ledger",
        "message",
        "phase",
        "sent_at",
        "strained",
        "value",
        "was_call",
    )

    def __init__(
        self, message: object, ledger: Ledger, caller: trio.lowlevel.Task | None
    ) -> None:
        self.message = message
        self.ledger = ledger
        # The parked caller, or None for a cast (and for a call once settled).
        self.caller = caller
        self.phase = QUEUED
        self.answered = False  # by the resource: a second answer is a bug
        self.value: Any = None
        self.error: BaseException | None = None
        # When the call was made, if its timing matters (a timeout, slow calls).
        self.sent_at = 0.0
        # A call settled: its caller is let go, and the repr still says "call".
        self.was_call = False
        # Answered with a failure that counts (a drop, for an adaptive limit).
        self.strained = False

    def settle(self, value: object, error: BaseException | None = None) -> None:
        """Give the caller its one answer and wake it.

        Only called while the request is QUEUED or TAKEN, by its ledger.
        """
        self.phase = SETTLED
        if self.caller is not None:
            self.value = value
            self.error = error
            trio.lowlevel.reschedule(self.caller)
            self.caller = None
            self.was_call = True

    def abort(self, _: object) -> trio.lowlevel.Abort:
        """Withdraw the request: its caller was cancelled while waiting.

        A queued request will be skipped by the inbox, so the resource never
        sees it; the answer to a taken one is dropped.
        """
        self.ledger.withdrawn(self)
        self.phase = SETTLED
        self.caller = None
        self.was_call = True
        return trio.lowlevel.Abort.SUCCEEDED

    def outcome(self) -> Any:  # noqa: ANN401 - the caller's reply type
        """Return the reply, or raise the error, the caller was woken with."""
        error = self.error
        if error is None:
            return self.value
        self.error = None
        try:
            raise error
        finally:
            # Break the cycle traceback -> frame -> error.
            del error

    def describe(self) -> str:
        """``call`` or ``cast``, the message, and where it is."""
        kind = "call" if self.caller is not None or self.was_call else "cast"
        return f"{kind} {self.message!r} {self.phase.value}"


@final
class Request(Generic[MessageT, ReplyT]):
    """A message for the resource, answered with :meth:`reply` or :meth:`fail`.

    A request from ``cast()`` has no caller waiting: answering it is allowed and
    does nothing, so one loop can serve calls and casts alike. Each request is
    answered at most once.
    """

    __slots__ = ("_envelope",)

    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope

    @property
    def message(self) -> MessageT:
        """What the caller sent."""
        return cast("MessageT", self._envelope.message)

    def __repr__(self) -> str:
        return f"<breaky.Request {self._envelope.describe()}>"

    def reply(self, value: ReplyT) -> None:
        """Answer the caller with ``value``.

        Raises:
            RuntimeError: if this request was already answered.

        """
        envelope = self._envelope
        if envelope.answered:
            self._answered_twice()
        envelope.answered = True
        if envelope.phase is TAKEN:
            envelope.ledger.answered(envelope, value, None)

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
        envelope = self._envelope
        if envelope.answered:
            self._answered_twice()
        envelope.answered = True
        if envelope.phase is TAKEN:
            envelope.ledger.answered(envelope, None, exception)

    def _answered_twice(self) -> NoReturn:
        msg = f"{self!r} was already answered; a request takes one answer"
        raise RuntimeError(msg)
