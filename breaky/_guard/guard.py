"""A guard: a circuit breaker around the caller's own coroutine calls.

A guard runs ``await fn(*args)`` in the caller's task, with no task and no
inbox of its own. Its decisions are its :class:`~breaky._core.core.Core`'s, as a
resource breaker's are; this module is only the call path: admission (ON, a
trial while OFF, or OFF), the bulkhead, the timeout, and telling the core how
the call ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, final

from breaky._core.calls import InTaskCalls
from breaky._core.core import Core
from breaky._core.policy import FROM_POLICY, FromPolicy, Kind, policy_for
from breaky._guard.block import GuardedBlock
from breaky._guard.stream import GuardedStream

from .attempt_call import Rules
from .attempts import Attempts
from .through import Way

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Awaitable,
        Callable,
        Coroutine,
    )
    from contextlib import AbstractAsyncContextManager

    from typing_extensions import TypeVarTuple, Unpack

    from breaky._core.events import StateChanges
    from breaky._core.off import Off
    from breaky._core.policy import Policy, PolicyOptions
    from breaky._core.states import State
    from breaky._core.statistics import BreakerStatistics

    PosArgT = TypeVarTuple("PosArgT")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@final
class Guard(InTaskCalls):
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

    __slots__ = ("_raising",)
    _raising: RaisingGuard

    def __init__(
        self,
        name: str,
        *,
        policy: Policy | None = None,
        **options: Unpack[PolicyOptions],
    ) -> None:
        check_name(name)
        policy = policy_for(Kind.GUARD, policy, dict(options))
        core = Core(name, policy, Kind.GUARD)
        super().__init__(core, attempts_of(core, None))

    def __repr__(self) -> str:
        return f"<breaky.Guard {self.name!r} {self.state.name}>"

    @property
    def name(self) -> str:
        """The guard's name."""
        return self._core.name

    @property
    def state(self) -> State:
        """The guard's :class:`breaky.State` (never ``STARTING``)."""
        return self._core.state

    @property
    def policy(self) -> Policy:
        """The guard's :class:`breaky.Policy`."""
        return self._core.policy

    @property
    def raising(self) -> RaisingGuard:
        """The same guard, whose calls raise :exc:`breaky.BreakerOff` for OFF."""
        try:
            return self._raising
        except AttributeError:
            self._raising = RaisingGuard(self._core, self._around)
            return self._raising

    run = InTaskCalls.run

    def __call__(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R | Off]]:
        """Decorate ``fn``: each call runs through the guard, as :meth:`run`."""
        return self._decorate(fn, False)  # noqa: FBT003

    def calling(
        self, *, timeout: float | FromPolicy | None = FROM_POLICY
    ) -> AbstractAsyncContextManager[None]:
        """Guard a block of awaits as one call: ``async with guard.calling():``.

        Entering the block is admitted as :meth:`run` admits a call (the
        trial while OFF, a place in the bulkhead); leaving it ends the call,
        judged as :meth:`run` judges one: an exception leaving the block
        counts as ``fn`` raising it would, and comes out unchanged;
        cancellation never counts. Made for each block; used once.

        Args:
            timeout: seconds the block (its wait for a place included) may
                take, by default the policy's ``call_timeout``; ``None`` for
                no limit. The block is then cancelled, and
                :exc:`breaky.CallTimeout` comes out of it.

        Raises:
            breaky.BreakerOff: at entry, after one checkpoint, when the guard
                is OFF or sheds the block (a block has no value to answer
                :data:`breaky.OFF` with); the block does not run.

        """
        return GuardedBlock(self._core, timeout)

    def stream(
        self,
        fn: Callable[[Unpack[PosArgT]], AsyncIterable[T]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,
    ) -> AbstractAsyncContextManager[AsyncIterator[T]]:
        """Guard an iteration of ``fn(*args)`` as one call (a streamed reply, a cursor).

        ``async with guard.stream(fn, *args) as items: async for item in
        items: ...``. Entering the block is admitted as :meth:`run` admits a
        call; the stream ends once: exhausted (a reply), raising while
        iterating (judged as :meth:`run` judges an exception, which comes
        out unchanged), or left before its end (cancelled, never a
        failure; the iterator is closed then). A trial is a whole iteration.

        Args:
            fn: a function returning an async iterable, such as an async
                generator function; called when the block is entered.
            args: its positional arguments.
            timeout: seconds each wait may take (for a place, then for each
                item), by default the policy's ``call_timeout``; ``None`` for
                no limit. The whole stream is not bounded: the caller's work
                between items is not the dependency's time. A wait past it
                raises :exc:`breaky.CallTimeout` (one failure).

        Raises:
            breaky.BreakerOff: at entry, after one checkpoint, when the guard
                is OFF or sheds the stream; ``fn`` is not called.
            TypeError: ``fn`` returned no async iterable (counted in
                ``errors``, never a failure).

        """
        return GuardedStream(self._core, fn, args, timeout)

    def failure(self) -> None:
        """Register one failure, as seen by the caller (a bad reply, say)."""
        self._core.failure_reported()

    def force_off(self) -> None:
        """Turn OFF until :meth:`reset`: every call is answered OFF."""
        self._core.force_off()

    def reset(self) -> None:
        """Forget the failures counted; if OFF (forced or not), trial now.

        The next call is then a trial. Ignored once stopped.
        """
        self._core.reset()

    def force_on(self) -> None:
        """Turn ON now, counting afresh: the dependency is known to be back.

        No trial is waited for (an operator's word, as resilience4j's
        ``transitionToClosedState``); a trial in flight decides nothing any
        more. Ignored once stopped.
        """
        self._core.force_on()

    def subscribe(self, *, max_buffer: int = 100) -> StateChanges:
        """Return a channel of this guard's later state changes, in order.

        As :meth:`breaky.CircuitBreaker.subscribe`: never slows the guard, the
        oldest change is dropped beyond ``max_buffer``, ends when stopped.
        """
        return self._core.subscribe(max_buffer)

    @property
    def in_flight(self) -> int:
        """Calls made through the guard and not answered yet (running or waiting)."""
        return self._core.in_flight()

    @property
    def concurrency_limit(self) -> int | None:
        """How many calls may run at once now (``None``: no bulkhead).

        ``max_concurrent``, or what a :class:`breaky.Adaptive` limit learned.
        """
        line = self._core.line
        return None if line is None else line.limit

    def statistics(self) -> BreakerStatistics:
        """Return a snapshot of the state, the failures and the totals."""
        core = self._core
        return core.statistics(core.in_flight(), self.concurrency_limit)


def guard_on(core: Core, rules: Rules | None = None) -> Guard:
    """The guard of a core made by its owner (a supervisor, a keyed group).

    ``rules``: the attempt rules (and budget) a keyed group's keys share.
    """
    guard = Guard.__new__(Guard)
    InTaskCalls.__init__(guard, core, attempts_of(core, rules))
    return guard


def attempts_of(core: Core, rules: Rules | None) -> Attempts | None:
    """A guard's re-attempts and hedges, if its policy makes more than one."""
    if core.policy.attempts <= 1:
        return None
    return Attempts(core, rules or Rules(core.policy))


def way_through(guard: InTaskCalls, args: tuple[object, ...]) -> Way:
    """The way of one attempt through ``guard``, passing ``fn`` ``args``."""
    core, path = guard.attempt_path()
    return Way(core, path, args)


def check_name(name: object) -> None:
    """Refuse a name that is no ``str``, or empty (it names logs and metrics)."""
    if not isinstance(name, str):
        msg = f"name must be a str, got {name!r}"
        raise TypeError(msg)
    if not name:
        msg = "name must be a non-empty str, got ''"
        raise ValueError(msg)


@final
class RaisingGuard(InTaskCalls):
    """A guard whose calls raise :exc:`breaky.BreakerOff` instead of returning OFF.

    ``guard.raising.run(fn)`` and ``@guard.raising`` share the guard itself:
    its state, counts and trials.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        core = self._core
        return f"<breaky.Guard {core.name!r} (raising) {core.state.name}>"

    async def run(
        self,
        fn: Callable[[Unpack[PosArgT]], Awaitable[R]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,
    ) -> R:
        """As :meth:`Guard.run`, raising :exc:`breaky.BreakerOff` for OFF."""
        result = await self._path()(fn, args, None, timeout, True)  # noqa: FBT003
        return cast("R", result)  # never OFF: that raised

    def __call__(
        self, fn: Callable[P, Awaitable[R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate ``fn``: each call runs through the guard, raising for OFF."""
        return cast(
            "Callable[P, Coroutine[Any, Any, R]]",
            self._decorate(fn, True),  # noqa: FBT003
        )

    def calling(
        self, *, timeout: float | FromPolicy | None = FROM_POLICY
    ) -> AbstractAsyncContextManager[None]:
        """As :meth:`Guard.calling` (which raises for OFF too)."""
        return GuardedBlock(self._core, timeout)

    def stream(
        self,
        fn: Callable[[Unpack[PosArgT]], AsyncIterable[T]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,
    ) -> AbstractAsyncContextManager[AsyncIterator[T]]:
        """As :meth:`Guard.stream` (which raises for OFF too)."""
        return GuardedStream(self._core, fn, args, timeout)
