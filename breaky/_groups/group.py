"""Keyed groups: one breaker per key (a host, a tenant, a shard), made on use.

A group holds its live keys in the order of their last use
(:class:`~breaky._groups.order.KeyOrder`); the bound (``max_keys``) makes
room from the front. The idle sweep needs no clock on the call path: every
``idle_timeout`` seconds it puts a *tick* at the end of the order, and looks
only at the keys in front of the ticks of the periods before.

What may be forgotten, and when:

- A *healthy* key (ON, no failure counted, nothing in flight) goes once
  unused for ``idle_timeout`` (within twice that), or at once when a new key
  needs its room, least recently used first.
- Any other key is *in use* while called: OFF or counting failures, it goes
  only once unused for ``2 * idle_timeout`` (within three times that), and a
  guard's OFF key not before its retry wait is over (until then, a fresh
  breaker would let calls through to a dead host early). A key with calls
  in flight, forced OFF or starting is never forgotten.
"""

from __future__ import annotations

import abc
import functools
import logging
import random
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from breaky._core.admission import refuse_call
from breaky._core.checks import check_count, check_seconds
from breaky._core.errors import BreakerOff
from breaky._core.events import Relay
from breaky._core.internals import Internals
from breaky._core.lifecycle import Lifecycle
from breaky._core.off import OFF, Off
from breaky._core.policy import Kind
from breaky._core.states import State
from breaky._core.statistics import COUNTERS, KeyedStatistics, Totals
from breaky._groups.order import STALE_PERIODS, KeyOrder
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
_OFF = State.OFF
_COUNTER_NAMES = tuple(name for name, *_ in COUNTERS)


class Group(abc.ABC, Generic[K]):
    """What both kinds of group share: keys, the bound, the sweep, closing."""

    __slots__ = (
        "_closed",
        "_forgotten",
        "_full",
        "_grace",
        "_idle_timeout",
        "_key_policy",
        "_keys",
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
        # Live keys, least recently used first; ``_order`` is the part a use
        # looks at first, read on the call path.
        self._keys: KeyOrder[tuple[K, Core]] = KeyOrder()
        self._order = self._keys.fresh
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
            ValueError: ``key`` is new, and empty or over 1,024 characters.
            breaky.BreakerOff: ``key`` is new, ``max_keys`` keys are alive
                and every one is in use.
            RuntimeError: the group is closed and ``key`` is not alive.

        """
        try:
            entry = self._keys.use(key)
        except TypeError:
            entry = None  # unhashable: _add says what a key must be
        if entry is not None:
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
        return isinstance(key, str) and key in self._keys

    def __len__(self) -> int:
        """The keys alive now."""
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        """The keys alive now, least recently used first (not a use)."""
        return iter([key for key, _ in self._keys.items()])

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
        for key, (breaker, core) in self._keys.items():
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
        return Internals(keys=tuple(breaker for _, (breaker, _) in self._keys.items()))

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
            entry = self._keys.use(key)
        except TypeError:
            entry = None  # unhashable: _add says what a key must be
        if entry is not None:
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
                    "in use: called lately while OFF or counting failures, "
                    "forced OFF, or with calls in flight): new keys, such as "
                    "%r, are answered OFF until one can",
                    self._noun,
                    self._name,
                    self._max_keys,
                    key,
                    extra={"group": self._name, "key": key},
                )
            return None
        self._full = False
        if self._sweeper is None:
            self._start_sweeper()
        name = key_name(self._name, key)
        breaker, core = self._make(name, key)
        core.group, core.key = self._name, key
        self._registry.add_key(name, core)
        self._keys.add(key, (breaker, core))
        return breaker

    @staticmethod
    def _healthy(entry: tuple[K, Core]) -> bool:
        """ON, no failure counted, nothing in flight: safe to forget."""
        breaker, core = entry
        return core.forgettable() and breaker.in_flight == 0

    @staticmethod
    def _stale(now: float, entry: tuple[K, Core]) -> bool:
        """Unused for two periods: safe to forget unless busy, forced or waiting."""
        breaker, core = entry
        if breaker.in_flight:
            return False
        state = core.state
        if state is _ON:
            return True  # failures counted, and nobody calls it
        if state is not _OFF:
            return False  # forced OFF (until reset()), or starting
        if core.kind is not Kind.GUARD:
            return True  # a resource retries on its own: forgetting ends that
        # A guard waits for a call to try again: not before its wait is over.
        retry_at = core.retry_at
        return retry_at is None or retry_at <= now

    def _make_room(self) -> bool:
        """At the bound: forget the least recently used healthy key, if any."""
        found = self._keys.find_room(self._healthy)
        if found is None:
            return False
        key, (_, core) = found
        self._forget(key, core, f"forgotten: {self._max_keys} keys are alive")
        return True

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
        self._keys.start_sweeps()
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
                # A full period after this sweep, however late it is: ticks
                # at least a period apart make the ages they tell true.
                due = trio.current_time() + period
                self._sweep()
                if not len(self):
                    break
        if self._sweeper is scope:
            # No key left: the sweeper ends; the next key starts another.
            self._sweeper = None
            self._keys.end_sweeps()

    def _sweep(self) -> None:
        """Forget the keys unused for long enough (see the module's notes)."""
        idle = self._idle_timeout
        stale = functools.partial(self._stale, trio.current_time())
        for key, (_, core) in self._keys.sweep(self._healthy, stale):
            if core.forgettable():
                reason = f"forgotten: unused for {idle:g} s"
            else:
                state = core.state.value
                reason = f"forgotten: {state}, unused for {STALE_PERIODS * idle:g} s"
            self._forget(key, core, reason)

    def _close(self, grace: float) -> None:
        """The supervisor closes, or the group is stopped: stop every key."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = None
        for key, (_, core) in self._keys.clear():
            self._retire(key, core)
            core.stop()
            self._stop_key(key, grace)
        self._relay.end()

    async def _refuse(self) -> Off:
        """A new key's call, refused at the bound (or closed): OFF, counted."""
        await refuse_call(self._retired)
        return OFF
