"""One session of a fleet with Redis, on coredis: connect, subscribe, round trips.

A session ends at the first failure (a timeout, a lost connection, an error
that Redis answers); the transport (:mod:`.transport`) decides what then.
Every wait on Redis runs under a Trio timeout of the fleet's own, the one
place where it decides that Redis is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import urllib.parse
from typing import TYPE_CHECKING, Any, cast, final

import attrs
import coredis
import coredis.exceptions
import coredis.pool
import coredis.retry
import trio

from .errors import PrimaryMovedError
from .scripts import BEAT, SYNC

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    from coredis.patterns.pubsub import ClusterPubSub, PubSub

    from .messages import Round
    from .protocol import SyncProtocol

__all__ = ["Client", "Session", "Settings", "StoreGoneError", "knock", "open_session"]

# What a client of coredis looks like to the fleet: a server, or a cluster.
Client = coredis.Redis[Any] | coredis.RedisCluster[Any]

# The lease lasts two periods, and is renewed twice a period: three late
# renewals do not lose it, and a dead prober's lease is free within
# report_ttl * 2 / 3.
_LEASE_SHARE = 2 / 3
_ROOM_PER_BREAKER = 0.001


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's choice


_BEAT_SHA, _SYNC_SHA = _sha(BEAT), _sha(SYNC)


class StoreGoneError(Exception):
    """A session with Redis ended: the store did not answer in time, or at all."""


@final
@attrs.frozen
class Settings:
    """What a session needs of its fleet: where Redis is, and who this is."""

    url: str | None
    client: Client | None
    instance: str
    # The lease's token: unique even if two processes share a name.
    token: str
    quorum: int
    prefix: str
    report_ttl: float

    @property
    def channel(self) -> str:
        return f"{self.prefix}:fleet"

    @property
    def instances_key(self) -> str:
        return f"{self.prefix}:instances"

    @property
    def period(self) -> float:
        return self.report_ttl / 3

    @property
    def timeout(self) -> float:
        """The longest wait for Redis: connecting, or one round trip."""
        return min(1.0, self.period)

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, coredis.RedisCluster)

    def new_client(self) -> Client:
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


async def knock(settings: Settings) -> None:
    """While Redis is gone, ask it for a PING over a bare connection first.

    coredis logs an error for each connection that fails; an outage should
    cost one warning, not an error a second. (Over TLS, a TCP connection is
    all that is tried; a client of one's own is not knocked for: its servers
    are its own business.)
    """
    if settings.url is None:
        return
    parts = urllib.parse.urlsplit(settings.url)
    if parts.scheme == "unix":
        return
    with trio.move_on_after(settings.timeout):
        stream = await trio.open_tcp_stream(parts.hostname or "", parts.port or 6379)
        async with stream:
            if parts.scheme == "rediss":
                return
            await stream.send_all(b"PING\r\n")
            if await stream.receive_some():  # +PONG, or -NOAUTH: it answers
                return
    msg = "no answer to a PING"
    raise StoreGoneError(msg)


@final
@attrs.define(eq=False)
class Session:
    """A connected client and its subscription to the fleet's channel."""

    settings: Settings
    client: Client
    subscriber: PubSub[Any] | ClusterPubSub[Any]

    async def listen(self, heard: Callable[[object], None]) -> None:
        """Pass each message of the fleet's channel to ``heard``.

        A lost connection ends the session: the pub/sub's own task raises.
        """
        while True:
            message = await self.subscriber.get_message()
            if message is not None:  # None: a subscription's acknowledgement
                heard(message["data"])

    async def follow(self) -> None:
        """End the session when the Sentinels name another primary.

        Only for a Sentinel's primary client. After a failover the old
        primary may answer as a primary for seconds, and writes there are
        lost: each period, the Sentinels are asked where the primary is.
        """
        pool = self.client.connection_pool
        if not isinstance(pool, coredis.pool.SentinelConnectionPool):
            return
        settings = self.settings
        while True:
            await trio.sleep(settings.period)
            here = pool.location
            with trio.move_on_after(settings.timeout):
                try:
                    host, port = await pool.sentinel_manager.discover_primary(
                        pool.service_name
                    )
                except (coredis.exceptions.RedisError, OSError):
                    continue  # no Sentinel answers: the primary may carry on
                if here is not None and (host, port) != (here.host, here.port):
                    msg = (
                        f"the Sentinels moved the primary of {pool.service_name!r} "
                        f"from {here} to {host}:{port}"
                    )
                    raise PrimaryMovedError(msg)

    async def beat(self, mode: str) -> int:
        """The heartbeat (or the goodbye): how many instances live."""
        timeout = self.settings.timeout
        with trio.move_on_after(timeout):
            live = await self.client.evalsha(
                _BEAT_SHA,
                [self.settings.instances_key],
                [self.settings.instance, mode, self._ttl_ms],
            )
            return int(cast("int", live))
        msg = f"no answer within {timeout:g} s"
        raise StoreGoneError(msg)

    @property
    def _ttl_ms(self) -> int:
        return round(self.settings.report_ttl * 1000)

    async def send(self, sent: Round, protocol: SyncProtocol) -> list[list[Any]]:
        """Send one round: the heartbeat and the script calls, pipelined.

        Return the calls' replies, in order. The heartbeats' answers go to
        ``protocol``.
        """
        settings = self.settings
        if sent.count_first:
            # The heartbeats' key is in another slot: count them first, so
            # that the reason of a quorum counts the live instances.
            protocol.counted(await self.beat("beat"))
        ttl_ms = self._ttl_ms
        common: list[str | int] = [
            settings.instance,
            settings.token,
            ttl_ms,
            round(ttl_ms * _LEASE_SHARE),
            settings.quorum,
            settings.channel,
            protocol.live,
        ]
        # On one server, each call counts the live heartbeats itself.
        single = [] if settings.cluster else [settings.instances_key]
        # Redis runs a thousand breakers' syncs in milliseconds; the room per
        # breaker is for this process, busy (or collecting its garbage)
        # between the writes and the reads of a large round.
        timeout = settings.timeout + _ROOM_PER_BREAKER * sum(map(len, sent.calls))
        with trio.move_on_after(timeout):
            heartbeat = None
            async with self.client.pipeline(transaction=False) as pipe:
                if sent.beat:
                    heartbeat = pipe.evalsha(
                        _BEAT_SHA,
                        [settings.instances_key],
                        [settings.instance, "beat", ttl_ms],
                    )
                requests = [
                    pipe.evalsha(
                        _SYNC_SHA,
                        keys=[k for s in call for k in protocol.keys(s[0])[0]] + single,
                        args=common + [a for s in call for a in (s[1], s[0])],
                    )
                    for call in sent.calls
                ]
            if heartbeat is not None:
                protocol.counted(int(cast("int", await heartbeat)))
            return [cast("list[Any]", await request) for request in requests]
        msg = f"no answer within {timeout:g} s"
        raise StoreGoneError(msg)


@contextlib.asynccontextmanager
async def open_session(settings: Settings) -> AsyncGenerator[Session]:
    """Connect, subscribe and load the scripts; close all of it after.

    Connecting and subscribing must not hang on a frozen server: they get the
    fleet's timeout.
    """
    setup = trio.CancelScope(deadline=trio.current_time() + settings.timeout)
    with setup:
        async with contextlib.AsyncExitStack() as stack:
            client = settings.new_client()
            if client is settings.client:
                # The user's: its pool counts entries (the user may have
                # entered it too), so leaving closes nothing of theirs.
                await stack.enter_async_context(client.connection_pool)
            else:
                await stack.enter_async_context(client)
            subscriber: PubSub[Any] | ClusterPubSub[Any] = client.pubsub(
                channels=[settings.channel],
                ignore_subscribe_messages=True,
                retry_policy=None,
            )
            await stack.enter_async_context(subscriber)
            # Loaded up front: EVALSHA needs no NOSCRIPT round trip.
            await client.script_load(BEAT)
            await client.script_load(SYNC)
            setup.deadline = float("inf")
            yield Session(settings, client, subscriber)
            return
    # Reached only when the setup timed out, and coredis did not turn that
    # cancellation into a ConnectionError (as it usually does).
    msg = "no answer while connecting"  # pragma: no cover
    raise StoreGoneError(msg)  # pragma: no cover
