"""A guarded block: ``async with guard.calling():`` runs several awaits as one call.

The block is admitted when it is entered and ended when it is left, through
the core's two moments, as :meth:`breaky.Guard.run` does for one call: the
same trial, bulkhead, counting and timeout. Its timeout is a cancel scope
entered in ``__aenter__`` and left in ``__aexit__``: ``async with`` does both
in the caller's task, with the block's own scopes nested inside it, which is
what Trio asks of a cancel scope.

The block has no value to answer OFF with, so a block refused (OFF, shed, or
turned away from the line) raises :exc:`breaky.BreakerOff` at entry, after
one checkpoint, and never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import trio

from breaky._core.admission import Outcome, Verdict
from breaky._core.checks import check_seconds
from breaky._core.errors import BreakerOff, CallTimeout
from breaky._core.policy import FROM_POLICY

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType
    from typing import NoReturn

    from breaky._core.admission import Admission
    from breaky._core.core import Core
    from breaky._core.policy import FromPolicy


def timeout_of(core: Core, timeout: float | FromPolicy | None) -> float | None:
    """The seconds a block (or a wait) may take: the policy's, or ``timeout``.

    Checked when the block is made: a bad timeout makes no call.
    """
    if timeout is FROM_POLICY:
        return core.policy.call_timeout
    return check_seconds("timeout", timeout, allow_none=True)


@final
class GuardedBlock:
    """One ``async with guard.calling():`` block, admitted as one call.

    It is used once: each block makes its own with ``guard.calling()``.
    """

    __slots__ = (
        "_admission",
        "_core",
        "_entered",
        "_ran_at",
        "_scope",
        "_seconds",
        "_waited",
    )

    def __init__(self, core: Core, timeout: float | FromPolicy | None) -> None:
        self._core = core
        self._seconds = timeout_of(core, timeout)
        self._entered = False
        self._admission: Admission = Verdict.WAIT  # set when entered
        self._scope: trio.CancelScope | None = None
        self._waited = False
        self._ran_at = 0.0

    def __repr__(self) -> str:
        return f"<breaky guarded block of {self._core.name!r}>"

    async def __aenter__(self) -> None:
        if self._entered:
            msg = "a guarded block is entered once: use guard.calling() for each"
            raise RuntimeError(msg)
        self._entered = True
        core = self._core
        admission = core.admit()
        if admission is Verdict.OFF or admission is Verdict.SHED:
            await core.refuse(admission)
            raise BreakerOff(core.name, shed=admission is Verdict.SHED)
        seconds = self._seconds
        if seconds is not None:
            # Entered here, left in __aexit__: the block runs inside it.
            scope = self._scope = trio.CancelScope(
                deadline=trio.current_time() + seconds
            )
            scope.__enter__()
        if admission is Verdict.WAIT:
            self._waited = True
            admission = await self._wait_for_place()
        self._admission = admission
        self._ran_at = trio.current_time()  # its own time starts now

    async def _wait_for_place(self) -> Admission:
        """Wait in line, within the block's timeout; the place, or BreakerOff."""
        core, scope = self._core, self._scope
        try:
            placed = await core.wait_for_place()
        except BaseException as exc:
            # Its wait reached the block's timeout (overload is no failure:
            # shed, as run() does), or its caller was cancelled.
            shed = False
            try:
                shed = scope is not None and _leave(scope, exc)
            finally:
                core.ended(Verdict.WAIT, Outcome.SHED if shed else Outcome.CANCELLED)
            if shed:
                raise BreakerOff(core.name, shed=True) from None
            raise
        if placed is Verdict.OFF:
            # The guard turned OFF while it waited: answered OFF, never run.
            if scope is not None:
                scope.__exit__(None, None, None)
            core.ended(Verdict.WAIT, Outcome.TURNED_AWAY)
            raise BreakerOff(core.name)
        return placed

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        core, admission, scope = self._core, self._admission, self._scope
        if scope is not None:
            try:
                if scope.__exit__(kind, error, traceback):
                    error = None  # its own timeout's Cancelled, caught
            except BaseException as rest:
                # The scope caught its part of a group; the rest goes on.
                self._judge(rest)
                raise
            if error is None and scope.cancelled_caught:
                timed_out = CallTimeout(
                    f"guard {core.name!r}: the block took longer than its "
                    f"timeout ({self._seconds:g} s) and was cancelled"
                )
                # A block that waited in line had less than its timeout to
                # run: overload took its time, so it is no failure (as run()).
                core.ended(
                    admission,
                    Outcome.LINE_TIMEOUT if self._waited else Outcome.TIMEOUT,
                    timed_out,
                )
                raise timed_out
        self._judge(error)
        return False

    def _judge(self, error: BaseException | None) -> None:
        """End the block's call with the core, by how it was left."""
        core, admission = self._core, self._admission
        if error is None:
            core.ended(admission, Outcome.REPLY, None, self._ran_at)
        elif isinstance(error, Exception):
            core.ended(admission, Outcome.ERROR, error, self._ran_at)
        else:
            core.ended(admission, Outcome.CANCELLED)  # never a failure


def _leave(scope: trio.CancelScope, error: BaseException) -> bool:
    """Leave ``scope`` with ``error`` in flight; whether it caught it (its own)."""
    return bool(scope.__exit__(type(error), error, error.__traceback__))


@final
class RefusedBlock:
    """A keyed group's block or stream for a key it cannot make: OFF at entry."""

    __slots__ = ("_name", "_refuse")

    def __init__(self, name: str, refuse: Callable[[], Awaitable[object]]) -> None:
        self._name = name
        self._refuse = refuse

    async def __aenter__(self) -> NoReturn:
        await self._refuse()
        raise BreakerOff(self._name)

    async def __aexit__(self, *_: object) -> bool:  # pragma: no cover - never entered
        return False
