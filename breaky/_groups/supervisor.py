"""The supervisor: a nursery that owns circuit breakers, found by name."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast, final

import attrs
import trio

from breaky._core.checks import check_count, check_seconds
from breaky._core.core import Core
from breaky._core.fleet import Fleet
from breaky._core.functions import PARTIAL, check_resource_function
from breaky._core.internals import Internals
from breaky._core.lifecycle import Lifecycle
from breaky._core.policy import Kind, Policy, policy_for
from breaky._core.states import State
from breaky._guard.guard import Guard, guard_on
from breaky._resource.breaker import CircuitBreaker

from .keyed import KeyedBreaker, KeyedGuard
from .registry import Entry, Registry, RegistryLink

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

    from typing_extensions import TypeVarTuple, Unpack

    from breaky._core.events import StateChanges
    from breaky._core.policy import PolicyOptions
    from breaky._resource.inbox import Inbox
    from breaky._resource.request import MessageT, ReplyT

    PosArgT = TypeVarTuple("PosArgT")


@final
@attrs.define(eq=False, repr=False)
class Supervisor:
    """Owns circuit breakers and guards; made by :func:`breaky.open_supervisor`.

    Look them up by name: ``sup["db"]``, ``"db" in sup``, ``len(sup)``, and
    ``for name in sup``; a name is taken once, whatever the kind.
    """

    _nursery: trio.Nursery
    _shutdown_timeout: float
    # Closed by open_supervisor() when the block ends.
    _registry: Registry

    def __repr__(self) -> str:
        state = "closed" if self._registry.closed else "open"
        return f"<breaky.Supervisor {state}, breakers: {self._registry.names()}>"

    def __getitem__(
        self, name: str
    ) -> CircuitBreaker[Any, Any] | Guard | KeyedGuard | KeyedBreaker[Any, Any]:
        entry = self._registry.get(name)
        if entry is None:
            msg = (
                f"no breaker or guard named {name!r}; known: "
                f"{sorted(self._registry.names())}"
            )
            raise KeyError(msg)
        return entry.breaker  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __len__(self) -> int:
        return len(self._registry)

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    async def start_circuit_breaker(
        self,
        name: str,
        fn: Callable[[Inbox[MessageT, ReplyT], Unpack[PosArgT]], Awaitable[object]],
        *args: Unpack[PosArgT],
        policy: Policy | None = None,
        **options: Unpack[PolicyOptions],
    ) -> CircuitBreaker[MessageT, ReplyT]:
        """Start a circuit breaker that supervises ``fn(inbox, *args)``.

        ``fn`` is started like :meth:`trio.Nursery.start` starts a task: it
        must accept ``task_status`` and call ``task_status.started(value)`` once
        it is ready to serve; raising or returning before that is a failed
        start. The breaker is returned once the first start has settled: ON,
        or OFF when ``failure_threshold`` attempts failed.

        Args:
            name: a name unique in this supervisor, used in logs and lookups.
            fn: the resource function, ``async def fn(inbox, *args, task_status)``.
            args: positional arguments for ``fn`` after the inbox (use
                :func:`functools.partial` for keyword arguments).
            policy: the breaker's :class:`~breaky.Policy` (by default
                ``Policy()``: the Erlang seed's defaults).
            **options: fields of Policy (``failure_threshold=5``,
                ``max_queued=100``, ...), overriding the policy's.

        Raises:
            TypeError, ValueError: a bad argument; nothing was started.
            RuntimeError: the supervisor is closed.

        """
        policy = policy_for(Kind.RESOURCE, policy, dict(options), hint=PARTIAL)
        self._check_new(name)
        check_resource_function(fn, args)
        lives: list[Lifecycle] = []
        breaker: CircuitBreaker[MessageT, ReplyT] = CircuitBreaker(
            name, fn, args, policy, self._registry.publisher, lives.append
        )
        (life,) = lives
        self._registry.add(name, Entry(breaker, life))
        # The breaker lives in the supervisor's nursery, not the caller's.
        life.start(self._nursery)
        try:
            await life.settled()
        except BaseException:
            # Cancelled while starting: as nursery.start would, leave nothing;
            # once the start has settled, the breaker stays.
            if breaker.state is State.STARTING:
                # Unsettled, so neither stopped nor closed: still registered.
                self._registry.remove(name)
                life.stop(0)
            raise
        return breaker

    def guard(
        self,
        name: str,
        *,
        policy: Policy | None = None,
        **options: Unpack[PolicyOptions],
    ) -> Guard:
        """Make a :class:`~breaky.Guard` that belongs to this supervisor.

        It is listed with the supervisor's breakers (``sup[name]``), its
        changes reach :meth:`subscribe`, it joins the supervisor's fleet, and
        it is STOPPED (answering OFF) when the supervisor closes.

        Args:
            name: a name unique in this supervisor, whatever the kind.
            policy: the guard's :class:`~breaky.Policy`.
            **options: fields of Policy, overriding the policy's.

        Raises:
            TypeError, ValueError: a bad argument; nothing was made.
            RuntimeError: the supervisor is closed.

        """
        policy = policy_for(Kind.GUARD, policy, dict(options))
        self._check_new(name)
        core = Core(name, policy, Kind.GUARD, self._registry.publisher)
        guard = guard_on(core)
        self._registry.add(name, Entry(guard, Lifecycle.of_core(core)))
        return guard

    def keyed_guard(
        self,
        name: str,
        *,
        max_keys: int = 10_000,
        idle_timeout: float = 300.0,
        policy: Policy | None = None,
        **options: Unpack[PolicyOptions],
    ) -> KeyedGuard:
        """Make a group of guards, one per key, made on first use.

        ``await group.run(key, fn, *args)`` runs ``fn`` through the guard of
        ``key`` (a host, a tenant id: any ``str``), made the first time the
        key is used. Every key shares the policy; each is an independent
        guard, named ``f"{name}[{key}]"`` in logs, events, metrics and the
        fleet. A key that is ON, counts no failure and has no call in flight
        is forgotten once unused for ``idle_timeout`` seconds (within twice
        that); one that is OFF or counts failures once unused for twice that
        (within three times, and for an OFF key not before its retry wait is
        over); one busy, forced OFF or starting is kept. See
        :class:`~breaky.KeyedGuard`.

        Args:
            name: a name unique in this supervisor, without ``[``;
                ``name[...]`` names are then reserved for its keys.
            max_keys: the most keys alive at once (an int >= 1): a new key at
                the bound evicts the least recently used healthy key, or, if
                every key is in use, is answered OFF.
            idle_timeout: seconds (> 0) unused after which a healthy key is
                forgotten.
            policy: the :class:`~breaky.Policy` of every key.
            **options: fields of Policy, overriding the policy's.

        Raises:
            TypeError, ValueError: a bad argument (each names it); nothing
                was made.
            RuntimeError: the supervisor is closed.

        """
        policy = policy_for(Kind.GUARD, policy, dict(options))
        self._check_new(name, group=True)
        lives: list[Lifecycle] = []
        group = KeyedGuard(
            name,
            policy,
            max_keys=max_keys,
            idle_timeout=idle_timeout,
            nursery=self._nursery,
            registry=self._registry,
            grace=self._shutdown_timeout,
            enlist=lives.append,
        )
        (life,) = lives
        self._registry.add(name, Entry(group, life))
        return group

    def keyed_breaker(
        self,
        name: str,
        fn: Callable[
            [Inbox[MessageT, ReplyT], str, Unpack[PosArgT]], Awaitable[object]
        ],
        *args: Unpack[PosArgT],
        max_keys: int = 10_000,
        idle_timeout: float = 300.0,
        policy: Policy | None = None,
        **options: Unpack[PolicyOptions],
    ) -> KeyedBreaker[MessageT, ReplyT]:
        """Make a group of resource breakers, one per key, started on first use.

        ``await group.call(key, message)`` (or ``cast``) goes to the
        resource of ``key``: the first use of a key starts
        ``fn(inbox, key, *args)`` in this supervisor's nursery, as
        :meth:`start_circuit_breaker` would, and calls queue while it starts.
        Keys are named, kept, forgotten and bounded as
        :meth:`keyed_guard`'s; a forgotten key's resource is stopped as
        :meth:`stop_circuit_breaker` stops one. See
        :class:`~breaky.KeyedBreaker`.

        Args:
            name: a name unique in this supervisor, without ``[``.
            fn: ``async def fn(inbox, key, *args, task_status)``.
            args: positional arguments for ``fn`` after the key.
            max_keys: the most keys alive at once (an int >= 1).
            idle_timeout: seconds (> 0) unused after which a healthy key is
                forgotten.
            policy: the :class:`~breaky.Policy` of every key.
            **options: fields of Policy, overriding the policy's.

        Raises:
            TypeError, ValueError: a bad argument (each names it); nothing
                was started.
            RuntimeError: the supervisor is closed.

        """
        policy = policy_for(Kind.RESOURCE, policy, dict(options))
        self._check_new(name, group=True)
        check_resource_function(fn, ("key", *args))
        lives: list[Lifecycle] = []
        group: KeyedBreaker[MessageT, ReplyT] = KeyedBreaker(
            name,
            fn,
            args,
            policy,
            max_keys=max_keys,
            idle_timeout=idle_timeout,
            nursery=self._nursery,
            registry=self._registry,
            grace=self._shutdown_timeout,
            enlist=lives.append,
        )
        (life,) = lives
        self._registry.add(name, Entry(group, life))
        return group

    def subscribe(self, *, max_buffer: int = 1000) -> StateChanges:
        """Return a channel of every breaker's later state changes, in order.

        Breakers started later are included. It never slows a breaker: beyond
        ``max_buffer`` unread changes the oldest is dropped and counted in
        ``missed``. It ends when the supervisor closes.
        """
        check_count("max_buffer", max_buffer, minimum=1)
        return self._registry.publisher.subscribe(max_buffer)

    async def stop_circuit_breaker(self, name: str) -> None:
        """Stop the breaker (or guard) ``name``; wait until its resource has ended.

        Its inbox is closed (the resource's ``async for`` ends) and queued
        requests are answered OFF; a resource still running after the
        supervisor's ``shutdown_timeout`` is cancelled. The name can be reused
        at once; the stopped breaker answers OFF. A keyed group's keys are all
        stopped so, and the group answers OFF from then on.

        Raises:
            KeyError: no breaker has that name.

        """
        self[name]
        life = self._registry.remove(name).life
        life.stop(self._shutdown_timeout)
        await trio.lowlevel.checkpoint()
        await life.stopped()

    def __breaky_internals__(self) -> Internals:
        """The test seam: its breakers as a fleet sees them."""
        return Internals(link=RegistryLink(self._registry))

    def _check_new(self, name: object, *, group: bool = False) -> None:
        if self._registry.closed:
            msg = "this supervisor is closed: its async with block has ended"
            raise RuntimeError(msg)
        self._registry.check_free(name, group=group)


@asynccontextmanager
async def open_supervisor(
    *, shutdown_timeout: float = 5.0, fleet: Fleet | None = None
) -> AsyncGenerator[Supervisor, None]:
    """Open a supervisor for circuit breakers; use with ``async with``.

    When the block ends, every breaker is stopped: inboxes close, resources get
    ``shutdown_timeout`` seconds to return, then are cancelled. An exception
    in the block cancels them at once and comes out as itself. Resource errors
    never come out; ``KeyboardInterrupt`` and ``SystemExit`` do.

    Args:
        shutdown_timeout: seconds resources get to return at the end.
        fleet: a fleet that every breaker of this supervisor joins under its
            name, such as :class:`breaky.redis.RedisFleet`; ``None`` (the
            default): each breaker is on its own. Opening never waits for the
            fleet's store.

    Raises:
        TypeError, ValueError: ``shutdown_timeout`` is not a finite number >= 0,
            or ``fleet`` is not a fleet.
        RuntimeError: ``fleet`` already serves another supervisor.

    """
    grace = check_seconds("shutdown_timeout", shutdown_timeout, allow_zero=True)
    assert grace is not None  # noqa: S101 - None is not allowed above
    if fleet is not None and not isinstance(cast("object", fleet), Fleet):
        msg = (
            "fleet must be a breaky fleet (breaky.redis.RedisFleet) or None, "
            f"got {fleet!r}"
        )
        raise TypeError(msg)
    if fleet is not None:
        fleet.claim()  # one supervisor at a time; freed when it is served
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            registry = Registry()
            supervisor = Supervisor(nursery, grace, registry)
            if fleet is not None:
                await nursery.start(fleet.serve, RegistryLink(registry))
            try:
                yield supervisor
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                body_error = exc
                registry.close(grace=0)
                nursery.cancel_scope.cancel()
            else:
                registry.close(grace=grace)
    except BaseExceptionGroup as group:
        # breaky's tasks raise only what must propagate; the block's own error
        # comes out as itself rather than wrapped in this nursery's group.
        _, rest = group.split(trio.Cancelled)
        if rest is not None or body_error is None:
            raise
    if body_error is not None:
        raise body_error
