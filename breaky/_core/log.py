"""A breaker's log records: one traceback per outage, a summary on recovery.

Every record goes to the ``breaky`` logger with the breaker's name (and its
group and key) in ``extra``. The first failure of an outage is an ERROR with
its traceback; a repeat of the same failure is one WARNING line, so that a
dependency down for an hour does not fill the log with the same traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, cast, final

import attrs

from breaky._core.states import State

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaky._core.events import StateChange

logger = logging.getLogger("breaky")


@final
@attrs.define(eq=False)
class OutageLog:
    """What one breaker logs, and what it remembers of the current outage."""

    noun: str
    """What the records call it: ``breaker`` or ``guard``."""
    name: str
    # The ``extra`` of every record (the breaker's name, state, group, key).
    extra: Callable[[], dict[str, object]]
    # What the breaker attempts while OFF: "start" or "trial call".
    attempt: str
    # The current outage (OFF, or not started yet): when it began, the
    # attempts counted then, and the last error whose traceback was logged.
    _off_since: float | None = attrs.field(init=False, default=None)
    _attempts_then: int = attrs.field(init=False, default=0)
    _traced: tuple[str, type[BaseException] | None] | None = attrs.field(
        init=False, default=None
    )
    # The user callbacks whose error was logged in this outage.
    _callbacks: set[str] = attrs.field(init=False, factory=set[str])

    def failure(self, what: str, error: BaseException | None) -> None:
        """An instance or attempt failed: ``what`` happened, because of ``error``.

        The first failure of an outage is an ERROR with its traceback, and so
        is one of a new kind (another ``what``, another type of error); a
        repeat, until an attempt succeeds again, is one WARNING line that
        names the error. Either way the record's ``error`` attribute is the
        exception (or ``None``).
        """
        # A group of one (a nursery's) is its one exception: what is logged,
        # its traceback, and what a repeat is compared by.
        error = collapse(error)
        key = (what, None if error is None else type(error))
        extra = {**self.extra(), "error": error}
        detail = "" if error is None else f" ({describe(error)})"
        if key == self._traced:
            logger.warning(
                "%s %r: the %s again%s", self.noun, self.name, what, detail, extra=extra
            )
            return
        self._traced = key
        # The traceback names the cause (its leaves, for a group of many).
        logger.error(
            "%s %r: the %s", self.noun, self.name, what, exc_info=error, extra=extra
        )

    def callback_failed(
        self,
        callback: str,
        error: Exception,
        judged: BaseException,
        then: str = "the call counts as a failure",
    ) -> None:
        """A user callback (``failure_exceptions``...) raised ``error`` on ``judged``.

        An ERROR with its traceback once an outage, DEBUG after that; ``then``
        says what breaky did instead. The record's ``error`` is the call's own
        exception; its ``exc_info``, the callback's.
        """
        extra = {**self.extra(), "error": judged}
        if callback in self._callbacks:
            logger.debug(
                "%s %r: its %s raised again (%s)",
                *(self.noun, self.name, callback, describe(error)),
                extra=extra,
            )
            return
        self._callbacks.add(callback)
        logger.error(
            "%s %r: its %s raised on %s; %s",
            *(self.noun, self.name, callback, describe(judged), then),
            exc_info=error,
            extra=extra,
        )

    def working(self) -> None:
        """An attempt succeeded: the next failure is news again."""
        self._traced = None

    def changed(
        self,
        change: StateChange,
        *,
        attempts: int,
        held: bool,
        failures: int,
        retry_at: float | None,
    ) -> None:
        """Log a state change; ``attempts`` is the running count of attempts."""
        old, new = change.old, change.new
        if (new is State.OFF or new is State.FORCED_OFF) and self._off_since is None:
            # An outage begins (a reset after force_off() continues it).
            self._off_since, self._attempts_then = change.time, attempts
        extra = self.extra()
        if new is State.ON:
            self._on(change, attempts)
        elif new is State.STOPPED:
            # A group forgets idle keys as a matter of course: not news.
            level = logging.INFO if "group" not in extra else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(level, "%s %r stopped", self.noun, self.name, extra=extra)
        elif new is State.OFF and old is State.FORCED_OFF:
            logger.info("%s %r was reset", self.noun, self.name, extra=extra)
        elif new is State.FORCED_OFF:
            logger.warning("%s %r forced OFF", self.noun, self.name, extra=extra)
        else:
            next_attempt = (
                ""
                if retry_at is None
                else f"; next {self.attempt} in {retry_at - change.time:g} s"
            )
            if held:
                logger.error(
                    "%s %r turned OFF (%s)%s",
                    *(self.noun, self.name, change.reason, next_attempt),
                    extra=extra,
                )
            else:
                logger.error(
                    "%s %r turned OFF after %d failures (last: %s)%s",
                    *(self.noun, self.name, failures, change.reason, next_attempt),
                    extra=extra,
                )

    def _on(self, change: StateChange, attempts: int) -> None:
        since, self._off_since = self._off_since, None
        self._traced = None
        self._callbacks.clear()
        summary = ""
        if since is not None:
            made = attempts - self._attempts_then
            summary = (
                f", after {change.time - since:.3g} s OFF and "
                f"{made} attempt{'' if made == 1 else 's'}"
            )
        logger.info(
            "%s %r is ON (%s)%s",
            *(self.noun, self.name, change.reason, summary),
            extra=self.extra(),
        )


def collapse(error: BaseException | None) -> BaseException | None:
    """A group of one exception is that exception (all the way down)."""
    if isinstance(error, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", error)
        inner = group.exceptions
        return collapse(inner[0]) if len(inner) == 1 else group
    return error


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions at the bottom of ``error``'s groups: the causes."""
    if isinstance(error, BaseExceptionGroup):
        inner = cast("BaseExceptionGroup[BaseException]", error).exceptions
        return [leaf for each in inner for leaf in leaves(each)]
    return [error]


def describe(error: BaseException) -> str:
    """``Type: message`` of each cause (a group's leaves), ``; ``-separated."""
    return "; ".join(_one(leaf) for leaf in leaves(error))


def _one(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
