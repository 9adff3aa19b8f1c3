"""The two kinds of keyed group: a guard per key, a resource breaker per key.

What they share (keys made on use, the bound, the idle sweep, statistics)
is :class:`~breaky._groups.group.Group`'s; each kind here makes its keys'
breakers and runs calls through them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, final

import trio

from breaky._core.core import Core
from breaky._core.off import OFF, Off
from breaky._core.policy import FROM_POLICY, FromPolicy, Kind
from breaky._groups.group import Group
from breaky._groups.registry import key_name
from breaky._guard.block import RefusedBlock
from breaky._guard.guard import Guard, guard_on
from breaky._guard.replicas import Shared, check_keys
from breaky._resource.breaker import CircuitBreaker
from breaky._resource.request import MessageT, ReplyT

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Awaitable,
        Callable,
        Iterable,
    )
    from contextlib import AbstractAsyncContextManager

    from typing_extensions import TypeVarTuple, Unpack

    from breaky._core.lifecycle import Lifecycle
    from breaky._core.policy import Policy
    from breaky._groups.registry import Registry

    PosArgT = TypeVarTuple("PosArgT")

R = TypeVar("R")
T = TypeVar("T")


@final
class KeyedGuard(Group[Guard]):
    """One :class:`~breaky.Guard` per key, made on first use, forgotten when idle.

    Made by :meth:`breaky.Supervisor.keyed_guard`. ``hosts[key]`` is the
    key's guard (made if new), ``key in hosts``, ``len(hosts)`` and ``for key
    in hosts`` see the keys alive now. Every key shares the group's policy;
    each has its own state, failures, trials and statistics; their extra
    attempts share one budget.
    """

    __slots__ = ("_attempts",)
    _noun = "keyed guard"

    def __init__(self, name: str, policy: Policy, **group: Any) -> None:  # noqa: ANN401 - Group's
        super().__init__(name, policy, **group)
        # The keys' attempt rules, with the group's one budget.
        self._attempts = Shared(self._key_policy)

    async def run(
        self,
        key: str,
        fn: Callable[[Unpack[PosArgT]], Awaitable[R]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,  # noqa: ASYNC109 - as Guard.run
    ) -> R | Off:
        """Return ``await fn(*args)`` through the guard of ``key``, or OFF.

        As :meth:`breaky.Guard.run` of the key's guard, made if the key is
        new. A new key at the ``max_keys`` bound, when every live key is in
        use, is answered :data:`breaky.OFF` (``fn`` is not called).

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` is new, and empty or over 1,024 characters.
            Exception: whatever ``fn`` raised, as :meth:`breaky.Guard.run`.

        """
        order = self._order
        try:
            entry = order.get(key)
        except TypeError:
            entry = None  # unhashable: _lookup says what a key must be
        if entry is None:
            guard = self._lookup(key)
            if guard is None:
                return await self._refuse()
        else:
            order.move_to_end(key)
            guard = entry[0]
        return await guard.run(fn, *args, timeout=timeout)

    def calling(
        self, key: str, *, timeout: float | FromPolicy | None = FROM_POLICY
    ) -> AbstractAsyncContextManager[None]:
        """Guard a block of awaits with the guard of ``key``: ``async with``.

        As :meth:`breaky.Guard.calling` of the key's guard, made if the key
        is new. A new key at the ``max_keys`` bound, when every live key is
        in use, raises :exc:`breaky.BreakerOff` at entry.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` is new, and empty or over 1,024 characters.

        """
        guard = self._lookup(key)
        if guard is None:
            return RefusedBlock(key_name(self.name, key), self._refuse)
        return guard.calling(timeout=timeout)

    def stream(
        self,
        key: str,
        fn: Callable[[Unpack[PosArgT]], AsyncIterable[T]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,
    ) -> AbstractAsyncContextManager[AsyncIterator[T]]:
        """Guard an iteration of ``fn(*args)`` with the guard of ``key``.

        As :meth:`breaky.Guard.stream` of the key's guard, made if the key
        is new; at the ``max_keys`` bound, as :meth:`calling`.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` is new, and empty or over 1,024 characters.

        """
        guard = self._lookup(key)
        if guard is None:
            return RefusedBlock(key_name(self.name, key), self._refuse)
        return guard.stream(fn, *args, timeout=timeout)

    async def run_any(
        self,
        keys: Iterable[str],
        fn: Callable[[str, Unpack[PosArgT]], Awaitable[R]],
        *args: Unpack[PosArgT],
        timeout: float | FromPolicy | None = FROM_POLICY,  # noqa: ASYNC109 - as run()'s
    ) -> R | Off:
        """Return ``await fn(key, *args)`` through any healthy key's guard, or OFF.

        ``key`` is one of ``keys`` (replicas of one service, say) that would
        not answer OFF, the one with the fewest calls in flight (ties in
        turn); keys are made on first use, as with :meth:`run`. Re-attempts
        and hedges (the policy's ``attempts``, ``hedge_after``) go to an ON
        key not tried yet in this call while one is left, within the group's
        budget. :data:`breaky.OFF` (``fn`` not called) only when every key
        would answer OFF.

        Raises:
            TypeError: ``keys`` is a ``str``, or holds a key that is not one.
            ValueError: ``keys`` is empty.
            Exception: what the last attempt raised, as :meth:`breaky.Guard.run`.

        """
        guards: list[tuple[str, Guard]] = []
        for key in check_keys(keys):
            guard = self._lookup(key)
            if guard is not None:
                guards.append((key, guard))
        if not guards:  # every key new, at the bound (or closed)
            return await self._refuse()
        answer = await self._attempts.run_any(guards, fn, args, timeout)
        return cast("R | Off", answer)

    def _make(self, name: str, key: str) -> tuple[Guard, Core]:  # noqa: ARG002 - as Group's
        core = Core(name, self._key_policy, Kind.GUARD, self._relay)
        return guard_on(core, self._attempts.rules), core

    def _stop_key(self, key: str, grace: float) -> None:
        """A guard has nothing to stop but its core, stopped already."""


@final
class KeyedBreaker(Group[CircuitBreaker[Any, Any]], Generic[MessageT, ReplyT]):
    """One resource :class:`~breaky.CircuitBreaker` per key, started on first use.

    Made by :meth:`breaky.Supervisor.keyed_breaker`. A new key starts
    ``fn(inbox, key, *args)`` in the supervisor's nursery; its calls queue
    while it is STARTING. A key forgotten (idle, or at the bound) is stopped
    as :meth:`breaky.Supervisor.stop_circuit_breaker` stops a breaker.
    """

    __slots__ = ("_args", "_closing", "_fn", "_lives")
    _noun = "keyed breaker"

    def __init__(  # noqa: PLR0913 - the supervisor's, all checked there
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        policy: Policy,
        *,
        max_keys: object,
        idle_timeout: object,
        nursery: trio.Nursery,
        registry: Registry,
        grace: float,
        enlist: Callable[[Lifecycle], None],
    ) -> None:
        super().__init__(
            name,
            policy,
            max_keys=max_keys,
            idle_timeout=idle_timeout,
            nursery=nursery,
            registry=registry,
            grace=grace,
            enlist=enlist,
        )
        self._fn = fn
        self._args = args
        # How to stop each live key's breaker; those alive when it closed.
        self._lives: dict[str, Lifecycle] = {}
        self._closing: list[Lifecycle] = []

    if TYPE_CHECKING:

        def __getitem__(self, key: str) -> CircuitBreaker[MessageT, ReplyT]: ...

    async def call(
        self,
        key: str,
        message: MessageT,
        *,
        timeout: float | FromPolicy | None = FROM_POLICY,  # noqa: ASYNC109 - as call()'s
    ) -> ReplyT | Off:
        """Send ``message`` to the resource of ``key``; its reply, or OFF.

        As :meth:`breaky.CircuitBreaker.call`, for the key's breaker, started
        if the key is new (the call waits in its inbox while it starts).

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` is new, and empty or over 1,024 characters.
            Exception: as :meth:`breaky.CircuitBreaker.call`.

        """
        breaker = self._lookup(key)
        if breaker is None:
            return await self._refuse()
        reply: ReplyT | Off = await breaker.call(message, timeout=timeout)
        return reply

    async def cast(self, key: str, message: MessageT) -> Off | None:
        """Queue ``message`` for the resource of ``key``, as ``cast()``.

        Returns ``None`` once queued, or :data:`breaky.OFF`.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` is new, and empty or over 1,024 characters.

        """
        breaker = self._lookup(key)
        if breaker is None:
            await trio.lowlevel.checkpoint()
            return OFF
        return await breaker.cast(message)

    def _make(self, name: str, key: str) -> tuple[CircuitBreaker[Any, Any], Core]:
        lives: list[Lifecycle] = []
        breaker: CircuitBreaker[Any, Any] = CircuitBreaker(
            name,
            self._fn,
            (key, *self._args),
            self._key_policy,
            self._relay,
            lives.append,
        )
        (life,) = lives
        self._lives[key] = life
        life.start(self._nursery)
        return breaker, cast("Core", life.core)

    def _stop_key(self, key: str, grace: float) -> None:
        life = self._lives.pop(key)
        if self._closed:
            self._closing.append(life)
        life.stop(grace)

    async def _stopped(self) -> None:
        await trio.lowlevel.checkpoint()
        for life in self._closing:
            await life.stopped()
