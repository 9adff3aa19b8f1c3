"""A call in the caller's own task, through its core: the guard's call path.

:class:`InTaskCalls` runs ``await fn(*args)`` in the caller's task: admitted
by the core (ON, the trial while OFF, a place in the line, OFF or shed),
under the call's timeout, and ended with the core (counted once, judged
once). Guards are built on it; so is every attempt of a call that makes
several. With nothing to time and no line (the *lean* path), :meth:`run`
does the admission and the counting itself, in its own frame: a guarded
call then costs two counter increments and a ``try`` more than the bare
call.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Protocol, TypeVar, cast

import trio

from breaky._core.admission import Outcome, Verdict
from breaky._core.checks import check_seconds
from breaky._core.errors import BreakerOff, CallTimeout
from breaky._core.functions import check_async_function, not_awaitable
from breaky._core.off import OFF as OFF_ANSWER
from breaky._core.off import Off
from breaky._core.policy import FROM_POLICY, FromPolicy
from breaky._core.states import State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from typing_extensions import TypeVarTuple, Unpack

    from breaky._core.core import Core
    from breaky._core.internals import Internals

    PosArgT = TypeVarTuple("PosArgT")

P = ParamSpec("P")
R = TypeVar("R")
# Module globals: fewer lookups on the hot paths.
_ON = State.ON
_CALL: Final = Verdict.CALL
_WAIT: Final = Verdict.WAIT
_REFUSED: Final = Verdict.OFF
_SHED: Final = Verdict.SHED
_checkpoint = trio.lowlevel.checkpoint
# A call whose await fails is judged a wrong call if what fn returned is no
# awaitable: checked only then, so that the ON path pays nothing for it.
_isawaitable: Final[Callable[[object], bool]] = inspect.isawaitable  # no narrowing


class Around(Protocol):
    """A call of several attempts around the one-attempt path (re-attempts)."""

    @property
    def lean(self) -> bool:
        """Whether a first attempt may take the lean path (no hedges)."""
        ...

    def deposit(self) -> None:
        """A call's first attempt is made while ON (the attempt budget's)."""
        ...

    async def call(  # noqa: PLR0913, PLR0917 - the one-attempt path's, and the path
        self,
        through: Callable[..., Awaitable[Any]],
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        kwargs: dict[str, Any] | None,
        timeout: float | FromPolicy | None,  # noqa: ASYNC109 - the call's
        raise_off: bool,  # noqa: FBT001
    ) -> object:
        """One call: its first attempt, and the others its policy allows."""
        ...

    async def after(
        self,
        through: Callable[..., Awaitable[Any]],
        error: Exception,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
    ) -> object:
        """A lean first attempt failed with ``error``: the rest of the call."""
        ...


class InTaskCalls:
    """What runs a call through a core in the caller's task; a guard is one."""

    __slots__ = ("_around", "_core", "_lean", "_timeout")

    def __init__(self, core: Core, around: Around | None = None) -> None:
        self._core = core
        # Re-attempts and hedges (breaky._guard.attempts), if the policy asks.
        self._around = around
        policy = core.policy
        self._timeout = policy.call_timeout
        # With no timeout, slow-call limit, rate rule, line or hedges, a call
        # needs no clock and no scope: the lean path.
        self._lean = (
            self._timeout is None
            and policy.slow_call_duration is None
            and policy.failure_rate is None
            and core.line is None
            and (around is None or around.lean)
        )

    def attempt_path(self) -> tuple[Core, Callable[..., Awaitable[Any]]]:
        """Breaky's own: its core and its path for one attempt (for replicas)."""
        return self._core, self._call

    def __breaky_internals__(self) -> Internals:
        """The test seam (see :func:`breaky.testing.internals`)."""
        return self._core.internals()

    async def run(  # noqa: C901, PLR0912 - the ON and OFF paths, flat: hot
        self,
        fn: Callable[[Unpack[PosArgT]], Awaitable[R]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,  # noqa: ASYNC109 - as call()'s
    ) -> R | Off:
        """Return ``await fn(*args)``, or :data:`breaky.OFF` if the guard is OFF.

        On the ON path this checkpoints exactly as ``fn`` does; OFF is
        answered after one checkpoint, and ``fn`` is never called.

        Args:
            fn: an async function, called in the caller's task.
            args: its positional arguments (use :func:`functools.partial`
                for keyword arguments, or decorate ``fn`` with the guard).
            timeout: seconds ``fn`` may take, by default the policy's
                ``call_timeout``; ``None`` for no limit.

        Raises:
            Exception: whatever ``fn`` raised (counted as a failure or not).
            breaky.CallTimeout: ``fn`` took longer than ``timeout`` and was
                cancelled; counts one failure.

        """
        core = self._core
        if core.state is not _ON:
            if timeout is not FROM_POLICY:  # a bad timeout is refused in any state
                check_seconds("timeout", timeout, allow_none=True)
            if core.refuses_at_once():
                # OFF, answered here as Core.refuse() does, with no frame
                # more than the checkpoint's: this is the hot OFF path.
                totals = core.totals
                try:
                    await _checkpoint()
                except BaseException as exc:
                    not_outside_trio(exc)
                    totals.calls += 1
                    totals.cancelled += 1  # the caller got Cancelled, not OFF
                    raise
                totals.calls += 1
                totals.off += 1
                return OFF_ANSWER
        elif self._lean and timeout is FROM_POLICY:
            # The lean path, inline: admitted (ON, no line), nothing to time.
            around = self._around
            if around is not None:
                around.deposit()  # a call made while ON: the budget's deposit
            totals = core.totals
            totals.calls += 1
            try:
                call = fn(*args)
            except Exception:
                totals.errors += 1  # a wrong call, not the dependency failing
                raise
            try:
                result = await call
            except Exception as exc:
                if not _isawaitable(call):  # fn is no async function
                    totals.errors += 1
                    raise not_awaitable(fn, call) from None
                core.ended(_CALL, Outcome.ERROR, exc)
                if around is None:
                    raise
                after = await around.after(self._call, exc, fn, args)
                return cast("R | Off", after)
            except BaseException:
                totals.cancelled += 1
                raise
            if core.failing:  # a success resets failures in a row
                core.ended(_CALL, Outcome.REPLY)
            else:
                totals.replies += 1
            return result
        around = self._around
        if around is not None:
            answer = await around.call(self._call, fn, args, None, timeout, False)  # noqa: FBT003
            return cast("R | Off", answer)
        return await self._call(fn, args, None, timeout, False)  # noqa: FBT003

    def _path(self) -> Callable[..., Awaitable[Any]]:
        """A call's path: one attempt, or the attempts around it."""
        around = self._around
        if around is None:
            return self._call
        return functools.partial(around.call, self._call)

    async def _call(  # noqa: C901, PLR0912, PLR0915 - one call's path, flat: hot
        self,
        fn: Callable[..., Awaitable[R]],
        args: tuple[object, ...],
        kwargs: dict[str, Any] | None,
        timeout: float | FromPolicy | None,  # noqa: ASYNC109 - run()'s
        raise_off: bool,  # noqa: FBT001 - internal, positional for speed
    ) -> R | Off:
        """One call, whatever the policy: admitted, timed, ended with the core."""
        if timeout is FROM_POLICY:
            seconds = self._timeout
        else:  # checked before the call counts: a bad timeout makes no call
            seconds = check_seconds("timeout", timeout, allow_none=True)
        try:
            start = ran_at = trio.current_time()
        except RuntimeError as exc:
            not_outside_trio(exc)
            raise  # pragma: no cover - trio's clock fails only outside a run
        core = self._core
        admission = core.admit()
        if admission is _REFUSED or admission is _SHED:
            await core.refuse(admission)
            if raise_off:
                raise BreakerOff(core.name, shed=admission is _SHED)
            return OFF_ANSWER
        waited = admission is _WAIT
        running = False
        call: object = None
        try:
            with trio.CancelScope(
                deadline=math.inf if seconds is None else start + seconds
            ) as scope:
                if waited:
                    admission = await core.wait_for_place()
                    ran_at = trio.current_time()  # its own time starts now
                if admission is not _REFUSED:
                    try:
                        call = fn(*args) if kwargs is None else fn(*args, **kwargs)
                    except Exception:
                        core.ended(admission, Outcome.WRONG_CALL)
                        raise
                    running = True
                    result = await call
        except Exception as exc:
            if running:
                # Its await failed on no awaitable: fn is no async function.
                if not _isawaitable(call):
                    core.ended(admission, Outcome.WRONG_CALL)
                    raise not_awaitable(fn, call) from None
                core.ended(admission, Outcome.ERROR, exc, ran_at)
            raise
        except BaseException:
            core.ended(admission, Outcome.CANCELLED)  # a trial's place is free
            raise
        if not running:
            # Never run: its wait for a place reached the call's timeout
            # (overload is no failure: shed), or the guard turned OFF while
            # it waited in line (answered OFF, as a resource breaker answers
            # its queue).
            shed = scope.cancelled_caught
            core.ended(admission, Outcome.SHED if shed else Outcome.TURNED_AWAY)
            if raise_off:
                raise BreakerOff(core.name, shed=shed)
            return OFF_ANSWER
        if scope.cancelled_caught:
            error = CallTimeout(
                f"guard {core.name!r}: the call took longer than its timeout "
                f"({seconds:g} s) and was cancelled"
            )
            # A call that waited in line had less than its timeout to run:
            # overload took its time, so its timeout is no outcome at all.
            core.ended(
                admission,
                Outcome.LINE_TIMEOUT if waited else Outcome.TIMEOUT,
                error,
                ran_at,
            )
            raise error
        core.ended(admission, Outcome.REPLY, None, ran_at)
        return result  # pyright: ignore[reportPossiblyUnboundVariable]

    def _decorate(
        self,
        fn: Callable[P, Awaitable[R]],
        raise_off: bool,  # noqa: FBT001
    ) -> Callable[P, Coroutine[Any, Any, R | Off]]:
        """Wrap ``fn`` so that each call goes through this one call path."""
        check_async_function(fn, what="a guard decorates")
        call, run = self._path(), self.run

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Off:
            if kwargs or raise_off:
                answer = await call(fn, args, kwargs, FROM_POLICY, raise_off)
                return cast("R | Off", answer)
            return await run(fn, *args)  # pyright: ignore[reportCallIssue, reportUnknownVariableType] - P.args

        return guarded


def not_outside_trio(error: BaseException) -> None:
    """Raise breaky's own error if ``error`` is Trio's for a call outside a run."""
    if not isinstance(error, RuntimeError):
        return
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        msg = (
            "breaky runs on Trio: await its calls inside trio.run() (asyncio and "
            "other event loops are not supported)"
        )
        raise RuntimeError(msg) from None
