"""A guard: a circuit breaker around the caller's own coroutine calls.

A guard runs ``await fn(*args)`` in the caller's task, with no task and no
inbox of its own. Its decisions are its :class:`~breaky._core.core.Core`'s, as a
resource breaker's are; this module is only the call path: admission (ON, a
trial while OFF, or OFF), the bulkhead, the timeout, and telling the core how
the call ended.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, final

import trio

from breaky._core.core import Core
from breaky._core.errors import BreakerOff, CallTimeout
from breaky._core.machine import Machine, State
from breaky._core.off import OFF, Off
from breaky._core.places import Places
from breaky._core.policy import FROM_POLICY, FromPolicy, Kind, check_seconds, policy_for

from .attempts import Attempts, Rules
from .through import Way

if TYPE_CHECKING:
    from .through import Through

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from typing_extensions import TypeVarTuple, Unpack

    from breaky._core.events import Publisher, StateChange, StateChanges
    from breaky._core.policy import Policy, PolicyOptions
    from breaky._core.statistics import BreakerStatistics

    PosArgT = TypeVarTuple("PosArgT")

P = ParamSpec("P")
R = TypeVar("R")
# Module globals: fewer lookups on the hot paths.
_ON = State.ON
_checkpoint = trio.lowlevel.checkpoint


@final
class Guard:
    """A circuit breaker around calls made in the caller's own task.

    ``await guard.run(fn, *args)`` returns what ``fn(*args)`` returns, or
    :data:`breaky.OFF` (after one checkpoint, ``fn`` never called) while the
    guard is OFF; decorating an async function with the guard does the same
    for every call of it. Made on its own (``breaky.Guard("api")``, usable in
    any Trio run, as a module-level decorator) or by
    :meth:`breaky.Supervisor.guard`, which lists it with the supervisor's
    breakers, publishes its changes, adds it to the supervisor's fleet and
    stops it when the supervisor closes.

    A guard starts ON. An ``Exception`` raised by ``fn`` comes out of the call
    unchanged and, by default, counts one failure (``failure_exceptions``
    narrows what counts); cancellation never counts. Once the retry wait has
    passed, the next call is a trial, and every other call meanwhile is
    answered OFF: ``trial_calls`` trials must succeed, one at a time, for the
    guard to turn ON. A trial whose caller is cancelled frees its place.

    Args:
        name: the guard's name, for logs, lookups and metrics.
        policy: its :class:`~breaky.Policy` (by default ``Policy()``); keyword
            options (any field of Policy) override its fields.
        **options: fields of Policy, such as ``failure_threshold=5``.

    Raises:
        TypeError, ValueError: a bad name, policy or option (one that means
            nothing for a guard, such as ``start_timeout``).

    """

    __slots__ = (
        "_attempts",
        "_core",
        "_lean",
        "_lean_budget",
        "_places",
        "_raising",
        "_timeout",
    )

    def __init__(
        self,
        name: str,
        *,
        policy: Policy | None = None,
        **options: Unpack[PolicyOptions],
    ) -> None:
        self._setup(name, policy_for(Kind.GUARD, policy, dict(options)), None)

    @classmethod
    def _made_for(
        cls, name: str, policy: Policy, watchers: Publisher, rules: Rules | None = None
    ) -> Guard:
        """A guard whose changes ``watchers`` (a supervisor's) are told too.

        ``rules``: the attempt rules (and budget) it shares with a keyed
        group's other keys, if any.
        """
        guard = cls.__new__(cls)
        guard._setup(name, policy, watchers, rules)
        return guard

    def _setup(
        self,
        name: object,
        policy: Policy,
        watchers: Publisher | None,
        rules: Rules | None = None,
    ) -> None:
        if not isinstance(name, str):
            msg = f"name must be a str, got {name!r}"
            raise TypeError(msg)
        self._core = Core(name, policy, Kind.GUARD, watchers)
        limit = policy.max_concurrent
        self._places = None if limit is None else Places(limit, policy.max_queued)
        if self._places is not None:
            self._core.effects = self
        self._timeout = policy.call_timeout
        # With no timeout, slow-call limit, rate rule or bulkhead, a call
        # needs no clock and no scope: the lean path.
        self._lean = (
            self._timeout is None
            and policy.slow_call_duration is None
            and policy.failure_rate is None
            and self._places is None
        )
        # Re-attempts and hedges (attempts.py): every call takes their path,
        # a lean guard's first attempt its own lean path.
        self._attempts = self._lean_budget = None
        if policy.attempts > 1:
            rules = rules or Rules(policy)
            self._attempts = Attempts(self._core, rules)
            if self._lean and policy.hedge_after is None:
                self._lean_budget = rules.budget
            self._lean = False
        self._raising: RaisingGuard | None = None

    def __repr__(self) -> str:
        return f"<breaky.Guard {self.name!r} {self.state.name}>"

    @property
    def name(self) -> str:
        """The guard's name."""
        return self._core.name

    @property
    def state(self) -> State:
        """The guard's :class:`breaky.State` (never ``STARTING``)."""
        return self._core.machine.state

    @property
    def policy(self) -> Policy:
        """The guard's :class:`breaky.Policy`."""
        return self._core.policy

    @property
    def raising(self) -> RaisingGuard:
        """The same guard, whose calls raise :exc:`breaky.BreakerOff` for OFF."""
        if self._raising is None:
            self._raising = RaisingGuard(self)
        return self._raising

    async def run(  # noqa: C901, PLR0912, PLR0915 - the hot paths, inline
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
        if core.machine.state is not _ON:
            if not self._trial_due():
                # OFF, answered here as Core.refuse() does, with no frame
                # more than the checkpoint's: this is the hot OFF path.
                totals = core.totals
                totals.calls += 1
                try:
                    await _checkpoint()
                except BaseException:
                    totals.cancelled += 1  # the caller got Cancelled, not OFF
                    raise
                totals.off += 1
                return OFF
        elif self._lean and timeout is FROM_POLICY:
            # The lean path, inline: nothing to time, no place to take.
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
                core.outcome(core.judge(exc, None))
                raise
            except BaseException:
                totals.cancelled += 1
                raise
            totals.replies += 1
            return result
        elif (budget := self._lean_budget) is not None and timeout is FROM_POLICY:
            # The lean path with attempts: the same, a deposit in the budget
            # (a call made while ON), and the attempts' path after a failure.
            budget.firsts += 1
            totals = core.totals
            totals.calls += 1
            try:
                call = fn(*args)
            except Exception:
                totals.errors += 1
                raise
            try:
                result = await call
            except Exception as exc:  # noqa: BLE001 - handed on below
                core.outcome(core.judge(exc, None))
                error = exc
            except BaseException:
                totals.cancelled += 1
                raise
            else:
                totals.replies += 1
                return result
            assert self._attempts is not None  # noqa: S101 - set with the budget
            after = await self._attempts.after(self._call, error, fn, args)
            return cast("R | Off", after)
        attempts = self._attempts
        if attempts is not None:
            answer = await attempts.call(self._call, fn, args, None, timeout, False)  # noqa: FBT003
            return cast("R | Off", answer)
        return await self._call(fn, args, None, timeout, False)  # noqa: FBT003

    def __call__(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R | Off]]:
        """Decorate ``fn``: each call runs through the guard, as :meth:`run`."""
        return _decorate(self, fn, False)  # noqa: FBT003

    def failure(self) -> None:
        """Register one failure, as seen by the caller (a bad reply, say)."""
        self._core.failure_reported()

    def force_off(self) -> None:
        """Turn OFF until :meth:`reset`: every call is answered OFF."""
        self._core.feed(Machine.force_off, "force_off() was called")

    def reset(self) -> None:
        """Forget the failures counted; if OFF (forced or not), trial now.

        The next call is then a trial. Ignored once stopped.
        """
        self._core.feed(Machine.reset, "reset() was called")

    def subscribe(self, *, max_buffer: int = 100) -> StateChanges:
        """Return a channel of this guard's later state changes, in order.

        As :meth:`breaky.CircuitBreaker.subscribe`: never slows the guard, the
        oldest change is dropped beyond ``max_buffer``, ends when stopped.
        """
        return self._core.subscribe(max_buffer)

    @property
    def in_flight(self) -> int:
        """Calls made through the guard and not answered yet (running or waiting)."""
        totals = self._core.totals
        return totals.calls - totals.answered()

    def statistics(self) -> BreakerStatistics:
        """Return a snapshot of the state, the failures and the totals."""
        return self._core.statistics(self.in_flight)

    def react(self, change: StateChange | None) -> None:
        """Effects: calls waiting for a place get OFF once the guard is not ON."""
        if change is not None and change.new is not _ON and self._places is not None:
            self._places.turn_away()

    def _stop(self) -> None:
        """Its supervisor closed: STOPPED, answering OFF, for good."""
        self._core.stop()

    # The call path: one for run(), the decorator and the raising forms.

    async def _call(  # noqa: C901, PLR0912, PLR0915 - one call's path, flat: hot
        self,
        fn: Callable[..., Awaitable[R]],
        args: tuple[object, ...],
        kwargs: dict[str, Any] | None,
        timeout: float | FromPolicy | None,  # noqa: ASYNC109 - run()'s
        raise_off: bool,  # noqa: FBT001 - internal, positional for speed
    ) -> R | Off:
        if timeout is FROM_POLICY:
            seconds = self._timeout
        else:  # checked before the call counts: a bad timeout makes no call
            seconds = check_seconds("timeout", timeout, allow_none=True)
        core = self._core
        totals = core.totals
        totals.calls += 1
        ticket = waits = owns = None
        places = self._places
        if core.machine.state is not _ON:
            if not self._trial_due():
                return await self._refuse(shed=False, raise_off=raise_off)
            # The one trial: it takes no place, however full the bulkhead.
            ticket = core.begin_trial()
        elif places is not None:
            if places.take_nowait():
                owns = places
            elif places.line_full:
                return await self._refuse(shed=True, raise_off=raise_off)
            else:
                waits = places
        start = ran_at = trio.current_time()
        placed = waits is None  # else it waits in line for a place first
        running = False
        try:
            with trio.CancelScope(
                deadline=math.inf if seconds is None else start + seconds
            ) as scope:
                if waits is not None and await waits.wait():
                    owns = waits  # handed a place: it gives it back
                    # Handed one in the very step the guard turned OFF: OFF.
                    placed = core.machine.state is _ON
                    ran_at = trio.current_time()  # its own time starts now
                if placed:
                    try:
                        call = fn(*args) if kwargs is None else fn(*args, **kwargs)
                    except Exception:
                        totals.errors += 1  # a wrong call, not a failing dependency
                        if ticket is not None:
                            core.end_trial(ticket, passed=None)
                        raise
                    running = True
                    result = await call
        except Exception as exc:
            if running:
                self._ended(ticket, core.judge(exc, ran_at), exc)
            raise
        except BaseException:
            totals.cancelled += 1
            if ticket is not None:
                core.end_trial(ticket, passed=None)  # its place is free again
            raise
        finally:
            if owns is not None:
                owns.give_back()
        if not running:
            # Never run: its wait for a place reached the call's timeout
            # (overload is no failure: shed), or the guard turned OFF while
            # it waited in line (answered OFF, as a resource breaker answers
            # its queue).
            shed = scope.cancelled_caught
            if shed:
                totals.shed += 1
            else:
                totals.off += 1
            if raise_off:
                raise BreakerOff(core.name, shed=shed)
            return OFF
        if scope.cancelled_caught:
            totals.timeouts += 1
            error = CallTimeout(
                f"guard {core.name!r}: the call took longer than its timeout "
                f"({seconds:g} s) and was cancelled"
            )
            # A call that waited in line had less than its timeout to run:
            # overload took its time, so its timeout is no outcome at all.
            if waits is None:
                self._ended(ticket, "a call timed out", error)
            raise error
        self._ended(ticket, core.judge(None, ran_at), None)
        return result  # pyright: ignore[reportPossiblyUnboundVariable]

    def _path(self) -> Through:
        """The path of a call: the guard's own, or its attempts' around it."""
        if self._attempts is None:
            return self._call
        return functools.partial(self._attempts.call, self._call)

    def _trial_due(self) -> bool:
        """Not ON: whether this call is the trial (the wait passed, none runs)."""
        core = self._core
        machine = core.machine
        if machine.retry_at is not None:
            # The time first: another run's clock ends the wait.
            if machine.waiting(core.now()):
                return False  # still waiting: no input, nothing to feed
            core.feed(Machine.retry_due, "retry")
        return core.machine.trial_wanted

    def _ended(
        self, ticket: int | None, reason: str | None, error: Exception | None
    ) -> None:
        """Tell the core how a call ended: a failure with ``reason``, or not."""
        core = self._core
        if ticket is None:
            core.outcome(reason)
            return
        if reason is not None:
            # The error says why; a slow trial has none, so its reason does.
            what = "trial call failed" if error else f"trial call failed ({reason})"
            core.log_error(what, error)
        core.end_trial(ticket, passed=reason is None)

    async def _refuse(self, *, shed: bool, raise_off: bool) -> Off:
        """Answer OFF (or raise) after one checkpoint: not serving, or shed."""
        await self._core.refuse(shed=shed)
        if raise_off:
            raise BreakerOff(self.name, shed=shed)
        return OFF


def way_through(guard: Guard, args: tuple[object, ...]) -> Way:
    """The way of one attempt through ``guard``, passing ``fn`` ``args``."""
    return Way(guard._core, guard._call, args)


def _decorate(
    guard: Guard,
    fn: Callable[P, Awaitable[R]],
    raise_off: bool,  # noqa: FBT001
) -> Callable[P, Coroutine[Any, Any, R | Off]]:
    """Wrap ``fn`` so that each call goes through ``guard``'s one call path."""
    given: object = fn
    unwrapped = inspect.unwrap(fn) if callable(given) else given
    if not callable(given) or (
        inspect.isroutine(unwrapped) and not inspect.iscoroutinefunction(unwrapped)
    ):
        msg = f"a guard decorates an async function (async def), got {fn!r}"
        raise TypeError(msg)
    call, run = guard._path(), guard.run

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Off:
        if kwargs or raise_off:
            return cast("R | Off", await call(fn, args, kwargs, FROM_POLICY, raise_off))
        return await run(fn, *args)  # pyright: ignore[reportCallIssue, reportUnknownVariableType] - P.args

    return guarded


@final
class RaisingGuard:
    """A guard whose calls raise :exc:`breaky.BreakerOff` instead of returning OFF.

    ``guard.raising.run(fn)`` and ``@guard.raising`` share the guard itself:
    its state, counts and trials.
    """

    __slots__ = ("_guard",)

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    def __repr__(self) -> str:
        return f"<breaky.Guard {self._guard.name!r} (raising) {self._guard.state.name}>"

    async def run(
        self,
        fn: Callable[[Unpack[PosArgT]], Awaitable[R]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,  # noqa: ASYNC109
    ) -> R:
        """As :meth:`Guard.run`, raising :exc:`breaky.BreakerOff` for OFF."""
        result = await self._guard._path()(fn, args, None, timeout, True)  # noqa: FBT003
        return cast("R", result)  # never OFF: that raised

    def __call__(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate ``fn``: each call runs through the guard, raising for OFF."""
        return cast(
            "Callable[P, Coroutine[Any, Any, R]]",
            _decorate(self._guard, fn, True),  # noqa: FBT003
        )
