"""Fleet-wide circuit breakers on Redis or Valkey: ``pip install "breaky[redis]"``.

Every breaker of a supervisor opened with ``fleet=RedisFleet(...)`` joins the
fleet under its name. Each instance still trips on its own; when ``quorum``
live instances see a breaker OFF, the fleet holds it OFF everywhere, one
instance (the holder of a lease) probes the resource, and when that probe
starts it the fleet turns ON again. See the how-to on fleets in the docs.

Where the fleet notices that Redis is gone: connecting and every command run
under a Trio timeout of the fleet's own (``min(1, report_ttl / 3)`` seconds),
coredis's own retries are off, and its pub/sub does not reconnect by itself
(a lost subscription ends the session). The first command that fails or
times out ends the session: one warning is logged, every breaker the fleet
held OFF goes back to its local retries, and the fleet tries again every
``min(1, report_ttl / 3)`` seconds until Redis answers; then it re-joins
(reports again, reads the fleet's state). A session sends something at least
every ``report_ttl / 3`` seconds, so a frozen or unreachable server is
noticed within about that time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import sys
import urllib.parse
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal, cast, final

import attrs
import coredis
import coredis.retry
import trio

from ._errors import split_errors
from ._fleet import Fleet, Link, View
from ._machine import State
from ._policy import check_count, check_seconds
from ._redis_script import SYNC

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from coredis.commands.script import Script
    from coredis.patterns.pubsub import PubSub

    from ._events import StateChanges

__all__ = ["RedisFleet"]

logger = logging.getLogger("breaky")

_SCHEMES = ("redis", "rediss", "unix")
# Renewals come every report_ttl / 3 seconds: they need some room.
_MIN_TTL = 0.5
# The lease lasts two renewal periods: one late renewal does not lose it, and
# a dead prober's lease is free within report_ttl * 2 / 3.
_LEASE_SHARE = 2 / 3

Mode = Literal["report", "withdraw", "recover", "leave"]


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


def _check_url(url: object) -> str:
    expected = "a redis://, rediss:// or unix:// URL string"
    if not isinstance(url, str):
        msg = f"url must be {expected}, got {url!r}"
        raise TypeError(msg)
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
        msg = f"url must be {expected}, got {redact(url)!r}"
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


class _StoreGoneError(Exception):
    """A session with Redis ended: the store did not answer in time, or at all."""


@final
@attrs.define(eq=False)
class _Tracker:
    """What a fleet knows between sessions with Redis, and what is to do."""

    # Breakers to sync with Redis (a dict: insertion order, no repeats).
    dirty: dict[str, None] = attrs.field(factory=dict[str, None])
    # Breakers whose start succeeded after OFF, not yet told to Redis.
    recovered: set[str] = attrs.field(factory=set[str])
    # What each breaker was last told, so that it is told only changes.
    told: dict[str, View] = attrs.field(factory=dict[str, View])
    # Why the fleet turned ON, from its announcement, per breaker.
    on_reasons: dict[str, str] = attrs.field(factory=dict[str, str])
    closing: bool = False
    _wake: trio.Event = attrs.field(factory=trio.Event)

    def mark(self, *names: str) -> None:
        self.dirty.update(dict.fromkeys(names))
        self._wake.set()

    def close(self) -> None:
        self.closing = True
        self._wake.set()

    async def wait(self) -> None:
        await self._wake.wait()
        self._wake = trio.Event()


@final
@attrs.define(eq=False, init=False)
class RedisFleet(Fleet):
    """A fleet of breakers that share their state through Redis or Valkey.

    Pass it to :func:`breaky.open_supervisor`; every breaker of that
    supervisor joins the fleet under its name. Nothing connects until then,
    and the supervisor never waits for Redis.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
            (TLS) or ``unix://``; the password and TLS are passed to the
            client, and no log record shows the password.
        instance: this process's name in the fleet, unique among the
            fleet's processes; by default the host name, the process id and a
            random suffix.
        quorum: how many live instances must see a breaker OFF before the
            fleet holds it OFF everywhere; an int >= 1 (default 2).
        prefix: every key and the channel start with ``prefix + ":"``.
        report_ttl: seconds after which an instance's report, membership and
            probe lease expire unless renewed (they are renewed every
            ``report_ttl / 3`` seconds); >= 0.5 (default 30).

    Raises:
        TypeError, ValueError: a bad argument; nothing was connected.

    """

    url: str
    instance: str
    quorum: int
    prefix: str
    report_ttl: float
    _token: str
    _serving: bool
    _warned: bool

    def __init__(
        self,
        url: str,
        *,
        instance: str | None = None,
        quorum: int = 2,
        prefix: str = "breaky",
        report_ttl: float = 30.0,
    ) -> None:
        ttl = check_seconds("report_ttl", report_ttl)
        assert ttl is not None  # noqa: S101 - None is not allowed above
        if ttl < _MIN_TTL:
            msg = (
                f"report_ttl must be a finite number of seconds >= {_MIN_TTL}, "
                f"got {report_ttl!r}"
            )
            raise ValueError(msg)
        url = _check_url(url)
        name = (
            _default_instance()
            if instance is None
            else _check_name("instance", instance)
        )
        self.url = url
        self.instance = name
        self.quorum = check_count("quorum", quorum, minimum=1)
        self.prefix = _check_name("prefix", prefix)
        self.report_ttl = ttl
        # The lease's token: unique even if two processes share a name.
        self._token = f"{name}:{secrets.token_hex(8)}"
        self._serving = False
        self._warned = False

    def __repr__(self) -> str:
        return (
            f"<breaky.redis.RedisFleet {redact(self.url)} instance={self.instance!r} "
            f"quorum={self.quorum} prefix={self.prefix!r}>"
        )

    @property
    def channel(self) -> str:
        """The pub/sub channel that announces the fleet's changes."""
        return f"{self.prefix}:fleet"

    def keys(self, breaker: str) -> list[str]:
        """The keys of one breaker: members, reports, fleet state, probe lease."""
        base = f"{self.prefix}:{breaker}"
        return [f"{base}:members", f"{base}:reports", f"{base}:fleet", f"{base}:probe"]

    @property
    def _timeout(self) -> float:
        return min(1.0, self.report_ttl / 3)

    def _client(self) -> coredis.Redis[str]:
        """A client for one session.

        coredis's own retries are off, and its timeouts are left alone: the
        fleet's Trio timeouts (around connecting, and around each command)
        are the one place where it decides that Redis is gone.
        """
        return coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry_policy=coredis.retry.NoRetryPolicy(),
        )

    # The fleet's task, in the supervisor's nursery.

    def claim(self) -> None:
        """Reserve this fleet for one supervisor (see :class:`breaky._fleet.Fleet`)."""
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
                tracker.mark(change.breaker)
                if changes.missed != missed:  # some lost: look at them all
                    missed = changes.missed
                    tracker.mark(*link.names(), *tracker.told)
        tracker.close()

    async def _keep_joined(self, link: Link, tracker: _Tracker) -> None:
        """Run sessions with Redis until the supervisor closes."""
        while not tracker.closing:
            try:
                if self._warned:
                    await self._knock()
                await self._session(link, tracker)
            except Exception as exc:  # noqa: BLE001 - any failure: Redis is gone
                self._gone(link, tracker, exc)
            else:
                return
            with trio.move_on_after(self._timeout):
                while not tracker.closing:
                    await tracker.wait()

    def _gone(self, link: Link, tracker: _Tracker, exc: Exception) -> None:
        """Redis is unreachable: carry on locally, warn once per outage."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "fleet %s: Redis at %s does not answer (%s); every breaker "
                "carries on alone until it does",
                self.instance,
                redact(self.url),
                _describe(exc),
            )
        # Said to every breaker: a breaker the fleet did not hold ignores it.
        for member in link.members():
            member.tell(View.LOST, "fleet lost: Redis does not answer")
        tracker.told.clear()

    async def _knock(self) -> None:
        """While Redis is gone, ask it for a PING over a bare connection first.

        coredis logs an error for each connection that fails; an outage
        should cost one warning, not an error a second. (Over TLS, a TCP
        connection is all that is tried.)
        """
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
                client = await stack.enter_async_context(self._client())
                pubsub = await stack.enter_async_context(
                    client.pubsub(
                        channels=[self.channel],
                        ignore_subscribe_messages=True,
                        retry_policy=None,
                    )
                )
                script = client.register_script(SYNC)
                # Loaded up front: no NOSCRIPT round trip (and coredis log
                # record) on the first call of each session.
                await client.script_load(SYNC)
                setup.deadline = math.inf
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(self._listen, pubsub, link, tracker)
                nursery.start_soon(self._tick, link, tracker)
                await self._in_step(script, link, tracker)
                nursery.cancel_scope.cancel()
                return
        # Reached only when the setup timed out, and coredis did not turn
        # that cancellation into a ConnectionError (as it usually does).
        msg = "no answer while connecting"  # pragma: no cover
        raise _StoreGoneError(msg)  # pragma: no cover

    async def _in_step(
        self, script: Script[str], link: Link, tracker: _Tracker
    ) -> None:
        """Sync each breaker that needs it, as it comes, until closing."""
        tracker.mark(*link.names(), *tracker.told)
        joined = False
        while True:
            while tracker.dirty:
                name = next(iter(tracker.dirty))
                del tracker.dirty[name]
                await self._sync(script, link, tracker, name)
            if not joined:
                joined = True
                if self._warned:
                    self._warned = False
                    logger.info("fleet %s: Redis answers again", self.instance)
            if tracker.closing:
                return
            await tracker.wait()

    async def _tick(self, link: Link, tracker: _Tracker) -> None:
        """Renew reports, membership and lease, and notice a silent Redis."""
        while True:
            await trio.sleep(self.report_ttl / 3)
            tracker.mark(*link.names(), *tracker.told)

    async def _listen(self, pubsub: PubSub[str], link: Link, tracker: _Tracker) -> None:
        """Turn each announcement into a sync of that breaker."""
        # A lost connection ends the session: the pub/sub's own task raises.
        while True:
            message = await pubsub.get_message()
            if message is None:
                continue  # a subscription's acknowledgement
            try:
                event = json.loads(str(message["data"]))
                name, by = str(event["breaker"]), str(event["by"])
            except (ValueError, TypeError, KeyError):
                continue  # not the script's: someone else's on our channel
            if by == self.instance or link.member(name) is None:
                continue  # our own news, or not our breaker
            if event["event"] == "on":
                tracker.on_reasons[name] = f"fleet ON: {by} started the resource"
            tracker.mark(name)

    async def _sync(
        self, script: Script[str], link: Link, tracker: _Tracker, name: str
    ) -> None:
        """Tell Redis this breaker's state here, and it what the fleet says."""
        member = link.member(name)
        mode: Mode
        if member is None or member.state is State.STOPPED:
            mode = "leave"
        elif name in tracker.recovered:
            mode = "recover"
        elif member.sees_off:
            mode = "report"
        else:
            mode = "withdraw"
        ttl_ms = round(self.report_ttl * 1000)
        args: list[str | int] = [
            self.instance,
            self._token,
            mode,
            ttl_ms,
            round(ttl_ms * _LEASE_SHARE),
            self.quorum,
            self.channel,
            name,
        ]
        reply: list[Any] = []
        with trio.move_on_after(self._timeout) as scope:
            raw = await script.execute(keys=self.keys(name), args=args)
            reply = cast("list[Any]", raw)
        if scope.cancelled_caught:
            msg = f"no answer within {self._timeout:g} s"
            raise _StoreGoneError(msg)
        tracker.recovered.discard(name)
        if member is None or mode == "leave":
            tracker.told.pop(name, None)
            return
        off, prober, why = reply[:3]
        if off and prober:
            view, reason = View.PROBE, f"fleet OFF: {why}; this instance probes"
        elif off:
            view, reason = View.OFF, f"fleet OFF: {why}"
        else:
            view = View.ON
            reason = tracker.on_reasons.pop(name, "fleet ON")
        if tracker.told.get(name) is not view:
            tracker.told[name] = view
            member.tell(view, reason)


def _describe(exc: BaseException) -> str:
    """The first error of ``exc`` (a group or not), in one line."""
    while isinstance(exc, BaseExceptionGroup):
        exc = cast("BaseExceptionGroup[BaseException]", exc).exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
