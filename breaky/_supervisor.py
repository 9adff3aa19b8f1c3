"""The supervisor: a nursery that owns circuit breakers, found by name."""

from __future__ import annotations

import inspect
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast, final

import attrs
import trio

from ._breaker import FROM_POLICY, CircuitBreaker, FromPolicy
from ._events import Publisher, StateChanges
from ._fleet import Fleet, Link
from ._policy import Policy, check_count, check_seconds

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
    from typing import Concatenate

    from ._inbox import Inbox
    from ._request import MessageT, ReplyT


@final
@attrs.define(eq=False, repr=False)
class Supervisor:
    """Owns circuit breakers; made by :func:`breaky.open_supervisor`.

    Look breakers up by name: ``sup["db"]``, ``"db" in sup``, ``len(sup)``,
    and ``for name in sup``.
    """

    _nursery: trio.Nursery
    _shutdown_timeout: float
    _breakers: dict[str, CircuitBreaker[Any, Any]] = attrs.field(
        init=False, factory=dict[str, CircuitBreaker[Any, Any]]
    )
    _closed: bool = attrs.field(init=False, default=False)
    _publisher: Publisher = attrs.field(init=False, factory=Publisher)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<breaky.Supervisor {state}, breakers: {list(self._breakers)}>"

    def __getitem__(self, name: str) -> CircuitBreaker[Any, Any]:
        try:
            return self._breakers[name]
        except KeyError:
            msg = f"no circuit breaker named {name!r}; known: {sorted(self._breakers)}"
            raise KeyError(msg) from None

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._breakers))

    async def start_circuit_breaker(  # noqa: PLR0913 - the options are the API
        self,
        name: str,
        fn: Callable[Concatenate[Inbox[MessageT, ReplyT], ...], Awaitable[object]],
        *args: object,
        policy: Policy | None = None,
        failure_threshold: int | FromPolicy = FROM_POLICY,
        retry_timeout: float | FromPolicy = FROM_POLICY,
        call_timeout: float | FromPolicy | None = FROM_POLICY,
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
            args: positional arguments for ``fn`` after the inbox.
            policy: the breaker's :class:`~breaky.Policy` (by default
                ``Policy()``: the Erlang seed's defaults); the keyword options
                below override its fields.
            failure_threshold: failures counted since the breaker last turned
                ON that turn it OFF; an int >= 1 (default 10).
            retry_timeout: seconds between start attempts while OFF; > 0
                (default 10).
            call_timeout: seconds a call waits by default; > 0, or None
                (default 5).

        Raises:
            TypeError, ValueError: a bad argument; nothing was started.
            RuntimeError: the supervisor is closed.

        """
        policy = _policy_with(
            policy,
            failure_threshold=failure_threshold,
            retry_timeout=retry_timeout,
            call_timeout=call_timeout,
        )
        self._check_new(name, fn, args)
        breaker: CircuitBreaker[MessageT, ReplyT] = CircuitBreaker(
            name, fn, args, policy, self._shutdown_timeout, self._publisher
        )
        self._breakers[name] = breaker
        # The breaker lives in the supervisor's nursery, not the caller's.
        self._nursery.start_soon(breaker._run, name=f"breaky {name!r}")
        self._nursery.start_soon(breaker._keep_deadlines, name=f"breaky {name!r} calls")
        try:
            await breaker._settled.wait()
        except BaseException:
            # Cancelled while starting: as nursery.start would, leave nothing;
            # once the start has settled, the breaker stays.
            if not breaker._settled.is_set():
                # Unsettled, so neither stopped nor closed: still registered.
                del self._breakers[name]
                breaker._stop(grace=0)
            raise
        return breaker

    def subscribe(self, *, max_buffer: int = 1000) -> StateChanges:
        """Return a channel of every breaker's later state changes, in order.

        Breakers started later are included. It never slows a breaker: beyond
        ``max_buffer`` unread changes the oldest is dropped and counted in
        ``missed``. It ends when the supervisor closes.
        """
        check_count("max_buffer", max_buffer, minimum=1)
        return self._publisher.subscribe(max_buffer)

    async def stop_circuit_breaker(self, name: str) -> None:
        """Stop the breaker ``name`` and wait until its resource has ended.

        Its inbox is closed (the resource's ``async for`` ends) and queued
        requests are answered OFF; a resource still running after the
        supervisor's ``shutdown_timeout`` is cancelled. The name can be reused
        at once; the stopped breaker answers OFF.

        Raises:
            KeyError: no breaker has that name.

        """
        breaker = self[name]
        del self._breakers[name]
        breaker._stop(grace=self._shutdown_timeout)
        await breaker._finished.wait()

    def _check_new(self, name: object, fn: object, args: tuple[object, ...]) -> None:
        if self._closed:
            msg = "this supervisor is closed: its async with block has ended"
            raise RuntimeError(msg)
        if not isinstance(name, str):
            msg = f"name must be a str, got {name!r}"
            raise TypeError(msg)
        if name in self._breakers:
            msg = f"a circuit breaker named {name!r} is already running here"
            raise ValueError(msg)
        _check_resource_function(fn, args)

    def _close(self, grace: float) -> None:
        self._closed = True
        breakers = list(self._breakers.values())
        self._breakers.clear()
        for breaker in breakers:
            breaker._stop(grace=grace)
        # Every breaker is STOPPED now: there will be no more changes.
        self._publisher.end()


def _policy_with(policy: Policy | None, **options: object) -> Policy:
    """``policy`` (or the default) with the options that were given."""
    if policy is None:
        policy = Policy()
    elif not isinstance(cast("object", policy), Policy):
        msg = f"policy must be a breaky.Policy or None, got {policy!r}"
        raise TypeError(msg)
    given: dict[str, Any] = {
        key: value for key, value in options.items() if value is not FROM_POLICY
    }
    return attrs.evolve(policy, **given) if given else policy


def _check_resource_function(fn: object, args: tuple[object, ...]) -> None:
    """Refuse, before anything starts, a function that cannot be a resource."""
    # Like nursery.start, accept a sync wrapper (functools.wraps) of an async
    # function; refuse a plain sync function before it fails every start.
    if not callable(fn) or (
        inspect.isroutine(inspect.unwrap(fn))
        and not inspect.iscoroutinefunction(inspect.unwrap(fn))
    ):
        msg = f"fn must be an async function (async def), got {fn!r}"
        raise TypeError(msg)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - some builtins hide it
        return
    try:
        signature.bind(None, *args, task_status=None)
    except TypeError as exc:
        if "task_status" in str(exc):
            msg = (
                f"{fn!r} must accept a task_status keyword argument, "
                "as a function started by nursery.start() does"
            )
        else:
            msg = f"{fn!r} cannot be called as fn(inbox, *args, task_status=...): {exc}"
        raise TypeError(msg) from None


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
        fleet._claim()  # one supervisor at a time; freed when it is served
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery, grace)
            if fleet is not None:
                await nursery.start(fleet._serve, Link(supervisor))
            try:
                yield supervisor
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                body_error = exc
                supervisor._close(grace=0)
                nursery.cancel_scope.cancel()
            else:
                supervisor._close(grace=grace)
    except BaseExceptionGroup as group:
        # breaky's tasks raise only what must propagate; the block's own error
        # comes out as itself rather than wrapped in this nursery's group.
        _, rest = group.split(trio.Cancelled)
        if rest is not None or body_error is None:
            raise
    if body_error is not None:
        raise body_error
