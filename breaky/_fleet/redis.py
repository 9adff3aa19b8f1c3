"""The implementation of :mod:`breaky.redis` (see its docstring)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import socket
import urllib.parse
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal, cast, final

import attrs
import coredis
import coredis.retry
import trio

from breaky._core.errors import split_errors
from breaky._core.fleet import Fleet, Link, View
from breaky._core.policy import check_count, check_seconds
from breaky._core.states import State

from .errors import Kind, Trouble, classify
from .hash_slot import hash_slot
from .scripts import BEAT, SYNC

if TYPE_CHECKING:
    from coredis.patterns.pubsub import ClusterPubSub, PubSub

    from breaky._core.events import StateChanges
    from breaky._core.fleet import Member

__all__ = ["RedisFleet"]

logger = logging.getLogger("breaky")

_SCHEMES = ("redis", "rediss", "unix")
# Renewals come every report_ttl / 3 seconds: they need some room.
_MIN_TTL = 0.5
# The lease lasts two periods, and is renewed twice a period: three late
# renewals do not lose it, and a dead prober's lease is free within
# report_ttl * 2 / 3.
_LEASE_SHARE = 2 / 3
# The most breakers in one script call (Redis runs a call without a pause,
# so a call must stay short), and in one round trip (so that leases and
# announcements never wait behind more than one such trip).
_CHUNK = 200
_ROUND = 1000
_ROOM_PER_BREAKER = 0.001
# A refusal that is configuration is retried after 2 s, then twice as long
# each time, up to a minute.
_BACKOFF_FIRST = 2.0
_BACKOFF_MAX = 60.0

Mode = Literal["report", "check", "recover", "yield", "leave"]
# What a client of coredis looks like to the fleet: a server, or a cluster.
Client = coredis.Redis[Any] | coredis.RedisCluster[Any]


def _default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


_EXPECTED = (
    "a redis://, rediss:// or unix:// URL string, or a coredis.Redis or "
    "coredis.RedisCluster client"
)


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in _SCHEMES
        or not (parts.hostname or (parts.scheme == "unix" and parts.path))
    ):
        hint = ""
        if parts is not None and "sentinel" in parts.scheme:
            hint = " (for Sentinel, pass coredis.Sentinel(...).primary_for(name))"
        msg = f"url_or_client must be {_EXPECTED}, got {redact(url)!r}{hint}"
        raise ValueError(msg)
    return url


def _check_name(name: str, value: object) -> str:
    if not isinstance(value, str):
        msg = f"{name} must be a non-empty str, got {value!r}"
        raise TypeError(msg)
    if not value:
        msg = f"{name} must be a non-empty str, got {value!r}"
        raise ValueError(msg)
    return value


def _text(value: object) -> str:
    """A reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


class _StoreGoneError(Exception):
    """A session with Redis ended: the store did not answer in time, or at all."""


@final
@attrs.define(eq=False)
class _Tracker:
    """What a fleet knows between round trips with Redis, and what is to do.

    Three queues of breaker names, drained in this order: ``leases`` (the
    leases this instance holds, due for renewal), ``dirty`` (a state change
    here, or an announcement) and ``routine`` (the period's renewals of
    reports and polls of held breakers). Dicts: insertion order, no repeats.
    """

    leases: dict[str, None] = attrs.field(factory=dict[str, None])
    dirty: dict[str, None] = attrs.field(factory=dict[str, None])
    routine: dict[str, None] = attrs.field(factory=dict[str, None])
    # Breakers whose start succeeded after OFF, not yet told to Redis.
    recovered: set[str] = attrs.field(factory=set[str])
    # What each breaker was last told, if not ON: it is told only changes.
    told: dict[str, View] = attrs.field(factory=dict[str, View])
    # Breakers whose report (as far as this instance knows) Redis holds.
    reported: set[str] = attrs.field(factory=set[str])
    # Bumped at each state change: a reply to a sync sent before the last
    # change is not told (a newer sync is queued, and it tells the truth).
    versions: dict[str, int] = attrs.field(factory=dict[str, int])
    # Why the fleet turned ON, from its announcement, per breaker.
    on_reasons: dict[str, str] = attrs.field(factory=dict[str, str])
    # Each breaker's keys and hash slot, worked out once.
    keys: dict[str, tuple[list[str], int]] = attrs.field(
        factory=dict[str, tuple[list[str], int]]
    )
    # The heartbeat is due (at each period, and at the start of a session).
    beat_due: bool = True
    closing: bool = False
    _wake: trio.Event = attrs.field(factory=trio.Event)

    def mark(self, *names: str) -> None:
        self.dirty.update(dict.fromkeys(names))
        self._wake.set()

    def changed(self, name: str) -> None:
        self.versions[name] = self.versions.get(name, 0) + 1
        self.mark(name)

    def renew_leases(self) -> None:
        """The leases this instance holds are due for renewal."""
        self.leases.update(
            dict.fromkeys(n for n, v in self.told.items() if v is View.PROBE)
        )
        self._wake.set()

    def period(self) -> None:
        """A new period: the heartbeat, leases, reports and held breakers."""
        self.beat_due = True
        self.renew_leases()
        self.routine.update(dict.fromkeys(self.reported))
        self.routine.update(
            dict.fromkeys(n for n, v in self.told.items() if v is View.OFF)
        )
        self._wake.set()

    @property
    def pending(self) -> bool:
        return bool(self.beat_due or self.leases or self.dirty or self.routine)

    def take(self, limit: int) -> tuple[list[str], int]:
        """Up to ``limit`` names, leases first, then changes, then routine.

        Also how many of them (the first ones) came from leases or changes.
        """
        names: dict[str, None] = {}
        urgent = 0
        for queue in (self.leases, self.dirty, self.routine):
            if queue is self.routine:
                urgent = len(names)
            # One pass over the queue's front (taking names one by one from
            # a dict's front is quadratic: its holes are walked again).
            for name in list(itertools.islice(queue, limit - len(names))):
                names[name] = None
                for each in (self.leases, self.dirty, self.routine):
                    each.pop(name, None)  # one sync covers them all
        return list(names), urgent

    def close(self) -> None:
        self.closing = True
        self._wake.set()

    async def wait(self) -> None:
        await self._wake.wait()
        self._wake = trio.Event()


# One breaker's part of a round trip: its name, the mode sent, and the
# version (count of changes) it was sent at. A tuple of a str, a str and an
# int: the garbage collector stops tracking it, so that thousands of them
# waiting on a round trip never make it walk the heap.
_Sync = tuple[str, Mode, int]


@final
@attrs.define(eq=False, init=False)
class RedisFleet(Fleet):
    """A fleet of breakers that share their state through Redis or Valkey.

    Pass it to :func:`breaky.open_supervisor`; every breaker of that
    supervisor joins the fleet under its name. Nothing connects until then,
    and the supervisor never waits for Redis.

    Args:
        url_or_client: either a URL, ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://`` (TLS) or ``unix://`` (the password and TLS are
            passed to the client; no log record shows the password), or a
            coredis client of one's own: :class:`coredis.Redis` (with any
            options: TLS, credentials, a Sentinel primary from
            ``coredis.Sentinel(...).primary_for(name)``) or
            :class:`coredis.RedisCluster`. The fleet enters a client it was
            given (coredis counts entries) and never closes it.
        instance: this process's name in the fleet, unique among the
            fleet's processes; by default the host name, the process id and a
            random suffix.
        quorum: how many live instances must see a breaker OFF before the
            fleet holds it OFF everywhere; an int >= 1 (default 2).
        prefix: every key and the channel start with ``prefix + ":"``.
        report_ttl: seconds after which an instance's heartbeat, reports and
            probe lease, and a fleet's OFF state, expire unless renewed
            (renewals come every ``report_ttl / 3`` seconds; the lease lasts
            two thirds of it); >= 0.5 (default 3).

    Raises:
        TypeError, ValueError: a bad argument; nothing was connected.

    """

    url: str | None
    client: Client | None
    instance: str
    quorum: int
    prefix: str
    report_ttl: float
    _token: str
    _serving: bool
    _trouble: Trouble | None
    _backoff: float
    _live: int

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        instance: str | None = None,
        quorum: int = 2,
        prefix: str = "breaky",
        report_ttl: float = 3.0,
    ) -> None:
        ttl = check_seconds("report_ttl", report_ttl)
        assert ttl is not None  # noqa: S101 - None is not allowed above
        if ttl < _MIN_TTL:
            msg = (
                f"report_ttl must be a finite number of seconds >= {_MIN_TTL}, "
                f"got {report_ttl!r}"
            )
            raise ValueError(msg)
        if isinstance(url_or_client, str):
            self.url, self.client = _check_url(url_or_client), None
        elif isinstance(url_or_client, (coredis.Redis, coredis.RedisCluster)):  # pyright: ignore[reportUnnecessaryIsInstance]
            self.url, self.client = None, url_or_client
        else:  # typed away, but a user may pass anything
            msg = f"url_or_client must be {_EXPECTED}, got {url_or_client!r}"  # type: ignore[unreachable]
            raise TypeError(msg)
        name = (
            _default_instance()
            if instance is None
            else _check_name("instance", instance)
        )
        self.instance = name
        self.quorum = check_count("quorum", quorum, minimum=1)
        self.prefix = _check_name("prefix", prefix)
        self.report_ttl = ttl
        # The lease's token: unique even if two processes share a name.
        self._token = f"{name}:{secrets.token_hex(8)}"
        self._serving = False
        self._trouble = None
        self._backoff = _BACKOFF_FIRST
        self._live = 1

    def __repr__(self) -> str:
        where = redact(self.url) if self.url is not None else repr(self.client)
        return (
            f"<breaky.redis.RedisFleet {where} instance={self.instance!r} "
            f"quorum={self.quorum} prefix={self.prefix!r}>"
        )

    @property
    def _where(self) -> str:
        return redact(self.url) if self.url is not None else repr(self.client)

    @property
    def channel(self) -> str:
        """The pub/sub channel that announces the fleet's changes."""
        return f"{self.prefix}:fleet"

    @property
    def instances_key(self) -> str:
        """The key of the instances' heartbeats."""
        return f"{self.prefix}:instances"

    def keys(self, breaker: str) -> list[str]:
        """The keys of one breaker: reports, fleet state, probe lease.

        The breaker's name is their hash tag: on Redis Cluster they share a
        slot, so one script may use them all.
        """
        base = f"{self.prefix}:{{{breaker}}}"
        return [f"{base}:reports", f"{base}:fleet", f"{base}:probe"]

    @property
    def period(self) -> float:
        """Seconds between heartbeats (and renewals of reports and leases)."""
        return self.report_ttl / 3

    @property
    def _timeout(self) -> float:
        return min(1.0, self.period)

    def _session_client(self) -> Client:
        """The client for one session: the user's, or one from the URL.

        From a URL, coredis's own retries are off and its timeouts are left
        alone: the fleet's Trio timeouts (around connecting, and around each
        round trip) are the one place where it decides that Redis is gone.
        """
        if self.client is not None:
            return self.client
        assert self.url is not None  # noqa: S101 - one of the two is set
        return coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry_policy=coredis.retry.NoRetryPolicy(),
        )

    # The fleet's task, in the supervisor's nursery.

    def claim(self) -> None:
        """Reserve this fleet for one supervisor (see ``Fleet.claim``)."""
        if self._serving:
            msg = f"{self!r} already serves a supervisor"
            raise RuntimeError(msg)
        self._serving = True

    async def serve(self, link: Link, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep the supervisor's breakers in the fleet, until it closes."""
        try:
            tracker = _Tracker()
            changes = link.subscribe()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, changes, link, tracker)
                await self._keep_joined(link, tracker)
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            # Cancelled from outside: coredis's clean-up under Trio may raise
            # errors of its own (anyio.ClosedResourceError) next to the
            # Cancelled. Only the cancellation is the supervisor's business.
            errors, rest = split_errors(exc)
            if rest is None:
                raise  # not a cancellation: a bug of the fleet's, shown as is
            if errors is not None:
                logger.debug("fleet: clean-up errors dropped", exc_info=errors)
            raise rest from None
        finally:
            self._serving = False

    async def _watch(
        self, changes: StateChanges, link: Link, tracker: _Tracker
    ) -> None:
        """Mark the breakers that changed; close when the supervisor does."""
        missed = 0
        async with changes:
            async for change in changes:
                if change.old is State.OFF and change.new is State.ON:
                    tracker.recovered.add(change.breaker)
                tracker.changed(change.breaker)
                if changes.missed != missed:  # some lost: look at them all
                    missed = changes.missed
                    every = [*link.names(), *tracker.told, *tracker.reported]
                    for name in dict.fromkeys(every):
                        tracker.changed(name)
        tracker.close()

    async def _keep_joined(self, link: Link, tracker: _Tracker) -> None:
        """Run sessions with Redis until the supervisor closes."""
        while not tracker.closing:
            try:
                if self._trouble is not None and self._trouble.kind is Kind.GONE:
                    await self._knock()
                await self._session(link, tracker)
            except Exception as exc:  # noqa: BLE001 - any failure ends a session
                wait = self._gone(link, tracker, exc)
            else:
                return
            with trio.move_on_after(wait):
                while not tracker.closing:
                    await tracker.wait()

    def _gone(self, link: Link, tracker: _Tracker, exc: Exception) -> float:
        """Redis failed: carry on locally, say so once; how long to wait."""
        trouble = classify(exc)
        if trouble.kind is Kind.CONFIG:
            wait, self._backoff = self._backoff, min(_BACKOFF_MAX, self._backoff * 2)
        else:
            wait = self._timeout
        if trouble != self._trouble and not (
            self._trouble is not None
            and trouble.kind is not Kind.CONFIG
            and trouble.kind is self._trouble.kind
        ):
            self._say(trouble)
        self._trouble = trouble
        # Said to every breaker: a breaker the fleet did not hold ignores it.
        for member in link.members():
            member.tell(View.LOST, "fleet lost: Redis does not answer")
        tracker.told.clear()
        return wait

    def _say(self, trouble: Trouble) -> None:
        if trouble.kind is Kind.CONFIG:
            logger.error(
                "fleet %s: Redis at %s refuses the fleet: %s. Fix: %s. Every "
                "breaker carries on alone; the fleet retries, less and less "
                "often (at most every %g s)",
                self.instance,
                self._where,
                trouble.cause,
                trouble.fix,
                _BACKOFF_MAX,
            )
        elif trouble.kind is Kind.BUSY:
            logger.warning(
                "fleet %s: Redis at %s cannot serve now (%s); every breaker "
                "carries on alone until it can",
                self.instance,
                self._where,
                trouble.cause,
            )
        else:
            logger.warning(
                "fleet %s: Redis at %s does not answer (%s); every breaker "
                "carries on alone until it does",
                self.instance,
                self._where,
                trouble.cause,
            )

    async def _knock(self) -> None:
        """While Redis is gone, ask it for a PING over a bare connection first.

        coredis logs an error for each connection that fails; an outage
        should cost one warning, not an error a second. (Over TLS, a TCP
        connection is all that is tried; a client of one's own is not
        knocked for: its servers are its own business.)
        """
        if self.url is None:
            return
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "unix":
            return
        with trio.move_on_after(self._timeout):
            stream = await trio.open_tcp_stream(
                parts.hostname or "", parts.port or 6379
            )
            async with stream:
                if parts.scheme == "rediss":
                    return
                await stream.send_all(b"PING\r\n")
                if await stream.receive_some():  # +PONG, or -NOAUTH: it answers
                    return
        msg = "no answer to a PING"
        raise _StoreGoneError(msg)

    async def _session(self, link: Link, tracker: _Tracker) -> None:
        """Join, then keep every breaker in step with Redis, until closing."""
        # Connecting and subscribing must not hang on a frozen server.
        setup = trio.CancelScope(deadline=trio.current_time() + self._timeout)
        with setup:
            async with AsyncExitStack() as stack:
                client = self._session_client()
                if client is self.client:
                    # The user's: its pool counts entries (the user may have
                    # entered it too), so leaving closes nothing of theirs.
                    await stack.enter_async_context(client.connection_pool)
                else:
                    await stack.enter_async_context(client)
                subscriber: PubSub[Any] | ClusterPubSub[Any] = client.pubsub(
                    channels=[self.channel],
                    ignore_subscribe_messages=True,
                    retry_policy=None,
                )
                await stack.enter_async_context(subscriber)
                # Loaded up front: EVALSHA needs no NOSCRIPT round trip.
                await client.script_load(BEAT)
                await client.script_load(SYNC)
                setup.deadline = float("inf")
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(self._listen, subscriber, link, tracker)
                nursery.start_soon(self._tick, tracker)
                await self._in_step(client, link, tracker)
                nursery.cancel_scope.cancel()
                return
        # Reached only when the setup timed out, and coredis did not turn
        # that cancellation into a ConnectionError (as it usually does).
        msg = "no answer while connecting"  # pragma: no cover
        raise _StoreGoneError(msg)  # pragma: no cover

    async def _in_step(self, client: Client, link: Link, tracker: _Tracker) -> None:
        """Sync what needs it, most urgent first, until closing."""
        # Joining: every breaker once, to learn what the fleet holds OFF.
        tracker.beat_due = True
        tracker.mark(*link.names(), *tracker.told, *tracker.reported)
        joined = False
        while True:
            while tracker.pending:
                await self._round(client, link, tracker)
                if not joined:
                    joined = True
                    if self._trouble is not None:
                        self._trouble = None
                        self._backoff = _BACKOFF_FIRST
                        logger.info("fleet %s: Redis answers again", self.instance)
                if tracker.closing:
                    tracker.routine.clear()  # leaving: no renewal matters now
            if tracker.closing:
                await self._beat(client, "leave")
                return
            await tracker.wait()

    async def _tick(self, tracker: _Tracker) -> None:
        """Start a period: heartbeat, leases, reports, polls of held breakers.

        Leases are renewed twice a period: a lease lasts two periods, so
        three renewals in a row may come late (a stalled process, a slow
        round trip) before it lapses.
        """
        while True:
            await trio.sleep(self.period / 2)
            tracker.renew_leases()
            await trio.sleep(self.period / 2)
            tracker.period()

    async def _listen(
        self, pubsub: PubSub[Any] | ClusterPubSub[Any], link: Link, tracker: _Tracker
    ) -> None:
        """Turn each announcement into an urgent sync of that breaker."""
        # A lost connection ends the session: the pub/sub's own task raises.
        while True:
            message = await pubsub.get_message()
            if message is None:
                continue  # a subscription's acknowledgement
            try:
                event = json.loads(cast("str | bytes", message["data"]))
                name, by = str(event["breaker"]), str(event["by"])
                what = str(event["event"])
            except (ValueError, TypeError, KeyError):
                continue  # not the script's: someone else's on our channel
            if by == self.instance or link.member(name) is None:
                continue  # our own news, or not our breaker
            if what == "on":
                tracker.on_reasons[name] = f"fleet ON: {by} started the resource"
            tracker.mark(name)

    # One round trip: the heartbeat if due, then up to _ROUND breakers.

    def _mode(self, member: Member | None, tracker: _Tracker, name: str) -> Mode | None:
        """What to tell Redis of ``name``, or None if Redis needs nothing."""
        told = tracker.told.get(name, View.ON)
        if member is None or member.state is State.STOPPED:
            # Leaving: only a report or a lease needs taking back.
            needed = name in tracker.reported or told is View.PROBE
            return "leave" if needed else None
        if member.state is State.FORCED_OFF:
            return "yield"  # it cannot probe: its lease goes at once
        # A start succeeded after OFF (seen as a change, or as a breaker ON
        # that the fleet last told to be OFF: a change that was missed).
        held = told is not View.ON
        if name in tracker.recovered or (held and member.state is State.ON):
            return "recover"
        return "report" if member.sees_off else "check"

    def _keys(self, tracker: _Tracker, name: str) -> tuple[list[str], int]:
        known = tracker.keys.get(name)
        if known is None:
            keys = self.keys(name)
            known = tracker.keys[name] = (keys, hash_slot(keys[0]))
        return known

    async def _round(self, client: Client, link: Link, tracker: _Tracker) -> None:
        syncs: list[_Sync] = []
        recovered: set[str] = set()
        fresh = False  # a report that may make the quorum: the reason counts
        names, urgent = tracker.take(_ROUND)
        cluster = isinstance(client, coredis.RedisCluster)
        groups: dict[int, list[_Sync]] = {}
        for i, name in enumerate(names):
            mode = self._mode(link.member(name), tracker, name)
            if mode is None:
                tracker.told.pop(name, None)
                tracker.keys.pop(name, None)
                continue
            if mode == "recover":
                recovered.add(name)
            fresh = fresh or (mode == "report" and i < urgent)
            sync = (name, mode, tracker.versions.get(name, 0))
            syncs.append(sync)
            # Script calls: one slot each (on a cluster), at most _CHUNK.
            slot = self._keys(tracker, name)[1] if cluster else 0
            groups.setdefault(slot, []).append(sync)
        tracker.recovered -= recovered
        calls = [
            group[i : i + _CHUNK]
            for group in groups.values()
            for i in range(0, len(group), _CHUNK)
        ]
        beat = False
        try:
            if cluster and fresh:
                # The heartbeats' key is in another slot: count them first,
                # so that the reason of a quorum counts the live instances.
                tracker.beat_due = False
                self._live = await self._beat(client, "beat")
            beat, tracker.beat_due = tracker.beat_due, False
            replies = await self._sync(client, tracker, calls, beat=beat)
        except BaseException:
            # Not told to Redis: tried again, in this session or the next.
            tracker.recovered |= recovered
            tracker.beat_due = tracker.beat_due or beat
            for name, _, _ in syncs:
                tracker.dirty[name] = None
            raise
        for call, reply in zip(calls, replies, strict=True):
            for j, sync in enumerate(call):
                self._apply(link, tracker, sync, reply, 3 * j)

    async def _beat(self, client: Client, mode: str) -> int:
        """The heartbeat (or the goodbye): how many instances live."""
        ttl_ms = round(self.report_ttl * 1000)
        args: list[str | int] = [self.instance, mode, ttl_ms]
        with trio.move_on_after(self._timeout):
            live = await client.evalsha(_sha(BEAT), [self.instances_key], args)
            return int(cast("int", live))
        msg = f"no answer within {self._timeout:g} s"
        raise _StoreGoneError(msg)

    async def _sync(
        self,
        client: Client,
        tracker: _Tracker,
        calls: list[list[_Sync]],
        *,
        beat: bool,
    ) -> list[list[Any]]:
        """Send the heartbeat and the script calls in one pipeline.

        Return the calls' replies, in order.
        """
        ttl_ms = round(self.report_ttl * 1000)
        common: list[str | int] = [
            self.instance,
            self._token,
            ttl_ms,
            round(ttl_ms * _LEASE_SHARE),
            self.quorum,
            self.channel,
            self._live,
        ]
        # On one server, each call counts the live heartbeats itself.
        single = (
            [] if isinstance(client, coredis.RedisCluster) else [self.instances_key]
        )
        # Redis runs a thousand breakers' syncs in milliseconds; the room per
        # breaker is for this process, busy (or collecting its garbage)
        # between the writes and the reads of a large round.
        timeout = self._timeout + _ROOM_PER_BREAKER * sum(map(len, calls))
        with trio.move_on_after(timeout):
            heartbeat = None
            async with client.pipeline(transaction=False) as pipe:
                if beat:
                    heartbeat = pipe.evalsha(
                        _sha(BEAT),
                        [self.instances_key],
                        [self.instance, "beat", ttl_ms],
                    )
                requests = [
                    pipe.evalsha(
                        _sha(SYNC),
                        keys=[k for s in call for k in self._keys(tracker, s[0])[0]]
                        + single,
                        args=common + [a for s in call for a in (s[1], s[0])],
                    )
                    for call in calls
                ]
            if heartbeat is not None:
                self._live = int(cast("int", await heartbeat))
            return [cast("list[Any]", await request) for request in requests]
        msg = f"no answer within {timeout:g} s"
        raise _StoreGoneError(msg)

    def _apply(
        self, link: Link, tracker: _Tracker, sync: _Sync, reply: list[Any], at: int
    ) -> None:
        """Tell the breaker what Redis answered, unless it changed meanwhile."""
        name, mode, version = sync
        if mode == "report":
            tracker.reported.add(name)
        else:
            tracker.reported.discard(name)
        if tracker.versions.get(name, 0) != version:
            return  # changed while Redis answered: its next sync tells it
        member = link.member(name)
        if mode == "leave" or member is None:
            tracker.told.pop(name, None)
            tracker.versions.pop(name, None)
            tracker.keys.pop(name, None)
            return
        if mode == "yield":
            # Forced OFF: whatever the fleet says waits for reset(), which
            # clears any hold; nothing to renew until then.
            tracker.told.pop(name, None)
            return
        told = tracker.told.get(name, View.ON)
        if not int(reply[at]):
            if told is View.ON:
                return  # the common case: nothing to say
            view, reason = View.ON, tracker.on_reasons.pop(name, "fleet ON")
        elif int(reply[at + 1]):
            view = View.PROBE
            reason = f"fleet OFF: {_text(reply[at + 2])}; this instance probes"
        else:
            view, reason = View.OFF, f"fleet OFF: {_text(reply[at + 2])}"
        # Told again if the breaker went its own way since (a reset() whose
        # start failed reports OFF while the fleet still holds it).
        if view is told and not (view is not View.ON and member.sees_off):
            return
        if view is View.ON:
            tracker.told.pop(name, None)
        else:
            tracker.told[name] = view
        member.tell(view, reason)


def _sha(script: str) -> str:
    return _SHAS[script]


def _digest(script: str) -> str:
    import hashlib  # noqa: PLC0415 - once, at import

    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's choice


_SHAS = {script: _digest(script) for script in (BEAT, SYNC)}
