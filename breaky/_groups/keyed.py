"""Keyed groups: one breaker per key (a host, a tenant, a shard), made on use.

A group holds its live keys in one ordered dict, least recently used first:
a use moves its key to the end, so that the bound (``max_keys``) evicts from
the front. The idle sweep needs no clock on the call path: every
``idle_timeout`` seconds the sweeper puts a *tick* (a marker) at the end of
the same dict, and forgets the evictable keys in front of the tick it put
the time before, which were last used more than one and at most two periods
ago. A sweep looks only at those keys, never at the others.

A key that is not evictable (not ON, failures counted, calls in flight) is
never forgotten; met by a sweep, it goes to the end as if just used.
"""

from __future__ import annotations

import abc
import logging
import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, final

import attrs
import trio

from breaky._core.errors import BreakerOff
from breaky._core.events import Publisher
from breaky._core.machine import Machine, State
from breaky._core.off import OFF, Off
from breaky._core.policy import FROM_POLICY, FromPolicy, check_count, check_seconds
from breaky._core.statistics import COUNTERS, Counts, Totals
from breaky._guard.guard import Guard
from breaky._guard.replicas import Shared, check_keys
from breaky._resource.breaker import CircuitBreaker
from breaky._resource.request import MessageT, ReplyT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

    from typing_extensions import TypeVarTuple, Unpack

    from breaky._core.core import Core
    from breaky._core.events import StateChange, StateChanges
    from breaky._core.policy import Policy
    from breaky._core.statistics import BreakerStatistics

    from .registry import Registry

    PosArgT = TypeVarTuple("PosArgT")

logger = logging.getLogger("breaky")

R = TypeVar("R")
K = TypeVar("K", bound="Guard | CircuitBreaker[Any, Any]")
_ON = State.ON
_COUNTER_NAMES = tuple(name for name, *_ in COUNTERS)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        msg = f"key must be a str (a host, a tenant id, a shard name), got {key!r}"
        raise TypeError(msg)
    return key


def key_name(group: str, key: str) -> str:
    """The name of a group's key, for logs, events, metrics and a fleet."""
    return f"{group}[{key}]"


@final
class _Tick:
    """A sweep's marker in a group's order of keys (never a ``str``)."""

    __slots__ = ()


@final
@attrs.define(eq=False)
class _Relay(Publisher):
    """A group's subscribers, who pass every change on to the supervisor's."""

    up: Publisher = attrs.field(kw_only=True)

    def publish(self, change: StateChange) -> None:
        super().publish(change)
        self.up.publish(change)


# attrs freezes a subclass of a mutable class; see BreakerStatistics.
@final
@attrs.frozen(kw_only=True)  # pyright: ignore[reportGeneralTypeIssues]
class KeyedStatistics(Counts):
    """A snapshot of a keyed group, from its ``statistics()``.

    The counters (``calls``, ``replies``, ``off``, ... as in
    :class:`~breaky.BreakerStatistics`) are totals over every key the group
    ever had, forgotten ones included, so they only grow; a call refused at
    the ``max_keys`` bound counts in ``calls``, ``off`` and ``refused``.

    Attributes:
        keys: the keys alive now.
        states: how many live keys are in each :class:`~breaky.State` (every
            state is present, most often with 0).
        failures: the failures counted now, summed over the live keys.
        pending: the calls not answered yet, summed over the live keys.
        forgotten: keys forgotten so far (idle, or evicted at the bound).
        refused: new keys refused at the ``max_keys`` bound because no live
            key could be forgotten (their calls were answered OFF).
        not_on: the statistics of each live key that is not ON, by key.

    """

    keys: int
    states: Mapping[State, int]
    failures: int
    pending: int
    forgotten: int
    refused: int
    not_on: Mapping[str, BreakerStatistics]


class _Group(abc.ABC, Generic[K]):
    """What both kinds of group share: keys, the bound, the sweep, closing."""

    __slots__ = (
        "_closed",
        "_forgotten",
        "_full",
        "_grace",
        "_idle_timeout",
        "_key_policy",
        "_mark",
        "_max_keys",
        "_name",
        "_nursery",
        "_order",
        "_policy",
        "_refused",
        "_registry",
        "_relay",
        "_retired",
        "_sweeper",
    )
    _noun = "group"

    def __init__(  # noqa: PLR0913 - the supervisor's, all checked there
        self,
        name: str,
        policy: Policy,
        *,
        max_keys: object,
        idle_timeout: object,
        nursery: trio.Nursery,
        registry: Registry,
        grace: float,
    ) -> None:
        self._max_keys = check_count("max_keys", max_keys, minimum=1)
        seconds = check_seconds("idle_timeout", idle_timeout)
        assert seconds is not None  # noqa: S101 - None is not allowed above
        self._idle_timeout = seconds
        self._name = name
        self._policy = policy
        # One random source for the jitter of every key: a Random each would
        # cost more memory than the rest of the key.
        if policy.rng is None:
            policy = attrs.evolve(policy, rng=random.Random())  # noqa: S311
        self._key_policy = policy
        self._nursery = nursery
        self._registry = registry
        self._grace = grace
        self._relay = _Relay(up=registry.publisher)
        # Live keys, least recently used first, and at most two ticks.
        self._order: OrderedDict[str | _Tick, K | None] = OrderedDict()
        self._mark: _Tick | None = None  # the last tick, while sweeping
        self._sweeper: trio.CancelScope | None = None
        self._retired = Totals()  # the counters of forgotten keys
        self._forgotten = 0
        self._refused = 0
        self._full = False  # in a spell of refusals at the bound
        self._closed = False

    def __repr__(self) -> str:
        return f"<breaky.{type(self).__name__} {self._name!r}, {len(self)} keys>"

    @property
    def name(self) -> str:
        """The group's name; a key's name is ``f"{name}[{key}]"``."""
        return self._name

    @property
    def policy(self) -> Policy:
        """The :class:`~breaky.Policy` every key shares."""
        return self._policy

    @property
    def max_keys(self) -> int:
        """The most keys alive at once."""
        return self._max_keys

    @property
    def idle_timeout(self) -> float:
        """Seconds unused after which a healthy key may be forgotten."""
        return self._idle_timeout

    def __getitem__(self, key: str) -> K:
        """The breaker of ``key``, made if new (a use of the key).

        Raises:
            TypeError: ``key`` is not a ``str``.
            breaky.BreakerOff: ``key`` is new, ``max_keys`` keys are alive
                and none can be forgotten.
            RuntimeError: the group is closed and ``key`` is not alive.

        """
        try:
            breaker = self._order.get(key)
        except TypeError:
            breaker = None  # unhashable: _add says what a key must be
        if breaker is not None:
            self._order.move_to_end(key)
            return breaker
        if self._closed:
            _check_key(key)
            msg = f"{self._noun} {self._name!r} is closed: its supervisor has ended"
            raise RuntimeError(msg)
        made = self._add(key)
        if made is None:
            raise BreakerOff(key_name(self._name, key))
        return made

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is alive now (not a use; nothing is made)."""
        return isinstance(key, str) and key in self._order

    def __len__(self) -> int:
        """The keys alive now."""
        return len(self._order) - (self._mark is not None)

    def __iter__(self) -> Iterator[str]:
        """The keys alive now, least recently used first (not a use)."""
        return iter([key for key in self._order if isinstance(key, str)])

    def subscribe(self, *, max_buffer: int = 1000) -> StateChanges:
        """Return a channel of every key's later state changes, in order.

        Keys made later are included; each change names its ``group`` and
        ``key``. As the supervisor's: never slows a key, drops the oldest
        beyond ``max_buffer``, ends when the group closes.
        """
        check_count("max_buffer", max_buffer, minimum=1)
        return self._relay.subscribe(max_buffer)

    def statistics(self) -> KeyedStatistics:
        """Return a snapshot of the group: its keys' totals and states."""
        sums = attrs.asdict(self._retired)
        states = dict.fromkeys(State, 0)
        failures = pending = 0
        not_on: dict[str, BreakerStatistics] = {}
        now = trio.current_time()
        for key, breaker in self._order.items():
            if breaker is None:
                continue
            # Read from the core: a snapshot object per key would cost more
            # than the sums (only the keys not ON get one).
            core: Core = breaker._core
            totals = core.totals
            for field in _COUNTER_NAMES:
                sums[field] += getattr(totals, field)
            state = core.machine.state
            states[state] += 1
            failures += core.machine.failures_at(now)
            pending += (
                breaker.in_flight
                if isinstance(breaker, Guard)
                else breaker._mailbox.pending_calls()  # calls, as statistics()
            )
            if state is not _ON:
                assert isinstance(key, str)  # noqa: S101 - a tick has no breaker
                not_on[key] = breaker.statistics()
        return KeyedStatistics(
            keys=len(self),
            states=states,
            failures=failures,
            pending=pending,
            forgotten=self._forgotten,
            refused=self._refused,
            not_on=not_on,
            **sums,
        )

    # What each kind does.

    @abc.abstractmethod
    def _make(self, name: str, key: str) -> K:
        """Make the breaker of a new key, named ``name``."""

    @abc.abstractmethod
    def _stop_key(self, breaker: K, grace: float) -> None:
        """Stop a key's breaker (already STOPPED), within ``grace`` seconds."""

    # Keys.

    def _lookup(self, key: str) -> K | None:
        """The key's breaker, made if new; ``None`` if refused (bound, closed)."""
        try:
            breaker = self._order.get(key)
        except TypeError:
            breaker = None  # unhashable: _add says what a key must be
        if breaker is not None:
            self._order.move_to_end(key)
            return breaker
        if self._closed:
            _check_key(key)
            return None
        return self._add(key)

    def _add(self, key: object) -> K | None:
        key = _check_key(key)
        if len(self) >= self._max_keys and not self._make_room():
            self._refused += 1
            if not self._full:
                self._full = True
                logger.warning(
                    "%s %r: %d keys are alive and none can be forgotten (each is "
                    "OFF, counts failures or has calls in flight): new keys, "
                    "such as %r, are answered OFF until one can",
                    self._noun,
                    self._name,
                    self._max_keys,
                    key,
                    extra={"group": self._name, "key": key},
                )
            return None
        self._full = False
        if self._mark is None:
            self._start_sweeper()
        name = key_name(self._name, key)
        breaker = self._make(name, key)
        core: Core = breaker._core
        core.group, core.key = self._name, key
        self._registry.add_key(name, core)
        self._order[key] = breaker
        return breaker

    def _evictable(self, breaker: K) -> bool:
        """ON, no failure counted, nothing in flight: safe to forget."""
        core: Core = breaker._core
        machine = core.machine
        return (
            machine.state is _ON
            and breaker.in_flight == 0
            and machine.failures_at(trio.current_time()) == 0
        )

    def _make_room(self) -> bool:
        """At the bound: forget the least recently used evictable key, if any."""
        for key, breaker in self._order.items():
            if breaker is not None and self._evictable(breaker):
                assert isinstance(key, str)  # noqa: S101 - a tick has no breaker
                del self._order[key]
                self._forget(
                    key, breaker, f"forgotten: {self._max_keys} keys are alive"
                )
                return True
        return False

    def _forget(self, key: str, breaker: K, reason: str) -> None:
        """Drop a key taken out of the order: stop it, keep its counts."""
        self._forgotten += 1
        self._retire(key, breaker)
        breaker._core.feed(Machine.stop, reason)
        self._stop_key(breaker, self._grace)

    def _retire(self, key: str, breaker: K) -> None:
        """The key leaves the group: out of the registry, its counts kept."""
        self._registry.remove_key(key_name(self._name, key))
        retired, totals = self._retired, breaker._core.totals
        for field in _COUNTER_NAMES:
            setattr(retired, field, getattr(retired, field) + getattr(totals, field))

    # The sweep.

    def _start_sweeper(self) -> None:
        mark = self._mark = _Tick()
        self._order[mark] = None
        self._order.move_to_end(mark, last=False)
        scope = self._sweeper = trio.CancelScope()
        self._nursery.start_soon(
            self._sweep_forever, scope, name=f"breaky {self._name!r} sweeper"
        )

    async def _sweep_forever(self, scope: trio.CancelScope) -> None:
        period = self._idle_timeout
        with scope:
            due = trio.current_time() + period
            while True:
                await trio.sleep_until(due)
                now = trio.current_time()
                due = max(due + period, now)
                self._sweep()
                if not len(self):
                    break
        if self._sweeper is scope:
            # No key left: the sweeper ends; the next key starts another.
            mark, self._mark, self._sweeper = self._mark, None, None
            assert mark is not None  # noqa: S101 - a sweeper has its tick
            del self._order[mark]

    def _sweep(self) -> None:
        """Forget the evictable keys unused since the tick before last."""
        order = self._order
        old = self._mark
        new = self._mark = _Tick()
        order[new] = None
        reason = f"forgotten: unused for {self._idle_timeout:g} s"
        while True:
            key, breaker = order.popitem(last=False)
            if key is old:
                return
            assert breaker is not None  # noqa: S101 - only ticks have none
            assert isinstance(key, str)  # noqa: S101
            if self._evictable(breaker):
                self._forget(key, breaker, reason)
            else:
                order[key] = breaker  # kept: as if used now

    def _close(self, grace: float) -> None:
        """The supervisor closes, or the group is stopped: stop every key."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        order, self._order = self._order, OrderedDict()
        self._mark = self._sweeper = None
        for key, breaker in order.items():
            if breaker is not None:
                assert isinstance(key, str)  # noqa: S101
                self._retire(key, breaker)
                breaker._core.stop()
                self._stop_key(breaker, grace)
        self._relay.end()

    async def _refuse(self) -> Off:
        """A new key's call, refused at the bound (or closed): OFF, counted."""
        retired = self._retired
        retired.calls += 1
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            retired.cancelled += 1
            raise
        retired.off += 1
        return OFF


@final
class KeyedGuard(_Group[Guard]):
    """One :class:`~breaky.Guard` per key, made on first use, forgotten when idle.

    Made by :meth:`breaky.Supervisor.keyed_guard`. ``hosts[key]`` is the
    key's guard (made if new), ``key in hosts``, ``len(hosts)`` and ``for key
    in hosts`` see the keys alive now. Every key shares the group's policy;
    each has its own state, failures, trials and statistics; their extra
    attempts share one budget.
    """

    __slots__ = ("_attempts",)
    _noun = "keyed guard"

    def __init__(self, name: str, policy: Policy, **group: Any) -> None:  # noqa: ANN401 - _Group's
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
        new. A new key at the ``max_keys`` bound, when no live key can be
        forgotten, is answered :data:`breaky.OFF` (``fn`` is not called).

        Raises:
            TypeError: ``key`` is not a ``str``.
            Exception: whatever ``fn`` raised, as :meth:`breaky.Guard.run`.

        """
        order = self._order
        try:
            guard = order.get(key)
        except TypeError:
            guard = None  # unhashable: _lookup says what a key must be
        if guard is None:
            guard = self._lookup(key)
            if guard is None:
                return await self._refuse()
        else:
            order.move_to_end(key)
        return await guard.run(fn, *args, timeout=timeout)

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

    def _make(self, name: str, key: str) -> Guard:  # noqa: ARG002 - as _Group's
        return Guard._made_for(
            name, self._key_policy, self._relay, self._attempts.rules
        )

    def _stop_key(self, breaker: Guard, grace: float) -> None:  # noqa: ARG002
        breaker._stop()


@final
class KeyedBreaker(_Group[CircuitBreaker[Any, Any]], Generic[MessageT, ReplyT]):
    """One resource :class:`~breaky.CircuitBreaker` per key, started on first use.

    Made by :meth:`breaky.Supervisor.keyed_breaker`. A new key starts
    ``fn(inbox, key, *args)`` in the supervisor's nursery; its calls queue
    while it is STARTING. A key forgotten (idle, or at the bound) is stopped
    as :meth:`breaky.Supervisor.stop_circuit_breaker` stops a breaker.
    """

    __slots__ = ("_args", "_fn")
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
    ) -> None:
        super().__init__(
            name,
            policy,
            max_keys=max_keys,
            idle_timeout=idle_timeout,
            nursery=nursery,
            registry=registry,
            grace=grace,
        )
        self._fn = fn
        self._args = args

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

        """
        breaker = self._lookup(key)
        if breaker is None:
            await trio.lowlevel.checkpoint()
            return OFF
        return await breaker.cast(message)

    def _make(self, name: str, key: str) -> CircuitBreaker[Any, Any]:
        breaker: CircuitBreaker[Any, Any] = CircuitBreaker(
            name, self._fn, (key, *self._args), self._key_policy, self._relay
        )
        self._nursery.start_soon(breaker._run, name=f"breaky {name!r}")
        self._nursery.start_soon(breaker._keep_deadlines, name=f"breaky {name!r} calls")
        return breaker

    def _stop_key(self, breaker: CircuitBreaker[Any, Any], grace: float) -> None:
        breaker._stop(grace)

    def _breakers(self) -> list[CircuitBreaker[Any, Any]]:
        """The live keys' breakers (to wait until their resources ended)."""
        return [b for b in self._order.values() if b is not None]
