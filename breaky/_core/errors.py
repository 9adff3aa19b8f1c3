"""Exceptions a caller can receive from a circuit breaker."""

from __future__ import annotations

import sys
from typing import cast, final

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup


@final
class ResourceLost(Exception):  # noqa: N818 - it is an outcome, not a bug report
    """The resource ended while it held the request, so no answer will come.

    ``__cause__`` is the resource's own exception when it crashed.
    """


@final
class BreakerOff(Exception):  # noqa: N818 - it is an answer, as OFF is
    """A guard's raising form refused the call: the guard is OFF, or shed it.

    The call was not made. ``breaker`` is the guard's name; ``shed`` tells a
    call shed by the bulkhead (too many waiting) from one refused while OFF.
    """

    def __init__(self, breaker: str, *, shed: bool = False) -> None:
        why = "too many calls wait (shed)" if shed else "it is OFF"
        super().__init__(f"guard {breaker!r} refused the call: {why}; it was not made")
        self.breaker = breaker
        self.shed = shed


@final
class CallTimeout(trio.TooSlowError):
    """The call was not answered before its timeout; this counts as one failure."""


def split_errors(
    exc: BaseException,
) -> tuple[Exception | None, BaseException | None]:
    """Split what a resource raised into its errors and what must propagate.

    Errors (``Exception``) are the resource's to lose; the rest (cancellation,
    ``KeyboardInterrupt``, ``SystemExit``) belongs to whoever is above breaky.
    """
    if isinstance(exc, Exception):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        errors, rest = group.split(Exception)
        # split() always makes a new group: a group of nothing but, say,
        # Cancelled is passed on as itself, as a lone Cancelled would be.
        return (errors, rest) if errors is not None else (None, group)
    return None, exc
