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
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import attrs
import trio

from breaky._core.admission import refuse_call
from breaky._core.checks import check_count, check_seconds
from breaky._core.errors import BreakerOff
from breaky._core.events import Relay
from breaky._core.internals import Internals
from breaky._core.lifecycle import Lifecycle
from breaky._core.off import OFF, Off
from breaky._core.states import State
from breaky._core.statistics import COUNTERS, KeyedStatistics, Totals
from breaky._groups.registry import check_key, key_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from typing_extensions import TypeVarTuple

    from breaky._core.core import Core
    from breaky._core.events import StateChanges
    from breaky._core.policy import Policy
    from breaky._core.statistics import BreakerStatistics
    from breaky._guard.guard import Guard
    from breaky._resource.breaker import CircuitBreaker

    from .registry import Registry

    PosArgT = TypeVarTuple("PosArgT")

logger = logging.getLogger("breaky")

R = TypeVar("R")
K = TypeVar("K", bound="Guard | CircuitBreaker[Any, Any]")
_ON = State.ON
_COUNTER_NAMES = tuple(name for name, *_ in COUNTERS)


@final
class _Tick:
    """A sweep's marker in a group's order of keys (never a ``str``)."""

    __slots__ = ()


class Group(abc.ABC, Generic[K]):
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
        enlist: Callable[[Lifecycle], None],
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
        self._relay = Relay(up=registry.publisher)
        # Live keys, least recently used first, and at most two ticks.
        self._order: OrderedDict[str | _Tick, tuple[K, Core] | None] = OrderedDict()
        self._mark: _Tick | None = None  # the last tick, while sweeping
        self._sweeper: trio.CancelScope | None = None
        self._retired = Totals()  # the counters of forgotten keys
        self._forgotten = 0
        self._refused = 0
        self._full = False  # in a spell of refusals at the bound
        self._closed = False
        enlist(Lifecycle(None, self._close, stopped=self._stopped))

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
            entry = self._order.get(key)
        except TypeError:
            entry = None  # unhashable: _add says what a key must be
        if entry is not None:
            self._order.move_to_end(key)
            return entry[0]
        if self._closed:
            check_key(key)
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
        limits: list[int] = []
        not_on: dict[str, BreakerStatistics] = {}
        for key, entry in self._order.items():
            if entry is None:
                continue
            breaker, core = entry
            # Read from the core: a snapshot object per key would cost more
            # than the sums (only the keys not ON get one).
            totals = core.totals
            for field in _COUNTER_NAMES:
                sums[field] += getattr(totals, field)
            state = core.state
            states[state] += 1
            failures += core.failures_now()
            pending += core.in_flight()
            limit = breaker.concurrency_limit
            if limit is not None:
                limits.append(limit)
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
            concurrency_limit=sum(limits) if limits else None,
            **sums,
        )

    def __breaky_internals__(self) -> Internals:
        """The test seam: the live keys' breakers, without a use of any."""
        return Internals(
            keys=tuple(entry[0] for entry in self._order.values() if entry is not None)
        )

    # What each kind does.

    @abc.abstractmethod
    def _make(self, name: str, key: str) -> tuple[K, Core]:
        """Make the breaker of a new key, named ``name``, and its core."""

    @abc.abstractmethod
    def _stop_key(self, key: str, grace: float) -> None:
        """Stop a key's breaker (already STOPPED), within ``grace`` seconds."""

    async def _stopped(self) -> None:
        """Wait until the tasks of the keys alive when it closed have ended."""
        await trio.lowlevel.checkpoint()

    # Keys.

    def _lookup(self, key: str) -> K | None:
        """The key's breaker, made if new; ``None`` if refused (bound, closed)."""
        try:
            entry = self._order.get(key)
        except TypeError:
            entry = None  # unhashable: _add says what a key must be
        if entry is not None:
            self._order.move_to_end(key)
            return entry[0]
        if self._closed:
            check_key(key)
            return None
        return self._add(key)

    def _add(self, key: object) -> K | None:
        key = check_key(key)
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
        breaker, core = self._make(name, key)
        core.group, core.key = self._name, key
        self._registry.add_key(name, core)
        self._order[key] = (breaker, core)
        return breaker

    def _evictable(self, entry: tuple[K, Core]) -> bool:
        """ON, no failure counted, nothing in flight: safe to forget."""
        breaker, core = entry
        return core.forgettable() and breaker.in_flight == 0

    def _make_room(self) -> bool:
        """At the bound: forget the least recently used evictable key, if any."""
        for key, entry in self._order.items():
            if entry is not None and self._evictable(entry):
                assert isinstance(key, str)  # noqa: S101 - a tick has no breaker
                del self._order[key]
                self._forget(
                    key, entry[1], f"forgotten: {self._max_keys} keys are alive"
                )
                return True
        return False

    def _forget(self, key: str, core: Core, reason: str) -> None:
        """Drop a key taken out of the order: stop it, keep its counts."""
        self._forgotten += 1
        self._retire(key, core)
        core.stop(reason)
        self._stop_key(key, self._grace)

    def _retire(self, key: str, core: Core) -> None:
        """The key leaves the group: out of the registry, its counts kept."""
        self._registry.remove_key(key_name(self._name, key))
        self._retired.add(core.totals)

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
            key, entry = order.popitem(last=False)
            if key is old:
                return
            assert entry is not None  # noqa: S101 - only ticks have none
            assert isinstance(key, str)  # noqa: S101
            if self._evictable(entry):
                self._forget(key, entry[1], reason)
            else:
                order[key] = entry  # kept: as if used now

    def _close(self, grace: float) -> None:
        """The supervisor closes, or the group is stopped: stop every key."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        order, self._order = self._order, OrderedDict()
        self._mark = self._sweeper = None
        for key, entry in order.items():
            if entry is not None:
                assert isinstance(key, str)  # noqa: S101
                self._retire(key, entry[1])
                entry[1].stop()
                self._stop_key(key, grace)
        self._relay.end()

    async def _refuse(self) -> Off:
        """A new key's call, refused at the bound (or closed): OFF, counted."""
        await refuse_call(self._retired)
        return OFF
