"""The implementation of :mod:`breaky.redis` (see its docstring).

:class:`RedisFleet` checks its arguments and serves a supervisor: its
transport (:mod:`.transport`) drives the sync protocol (:mod:`.protocol`)
over sessions with Redis (:mod:`.session`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, final

import attrs
import coredis

from breaky._core.checks import check_count, check_seconds
from breaky._core.errors import split_errors
from breaky._core.fleet import Fleet

from .messages import breaker_keys
from .session import Client, Settings
from .transport import Transport
from .urls import EXPECTED, check_url, redact

if TYPE_CHECKING:
    import trio

    from breaky._core.fleet import Link

__all__ = ["RedisFleet"]

logger = logging.getLogger("breaky")

# Renewals come every report_ttl / 3 seconds: they need some room.
_MIN_TTL = 0.5


def _default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _check_name(name: str, value: object) -> str:
    if not isinstance(value, str):
        msg = f"{name} must be a non-empty str, got {value!r}"
        raise TypeError(msg)
    if not value:
        msg = f"{name} must be a non-empty str, got {value!r}"
        raise ValueError(msg)
    return value


@final
@attrs.define(eq=False, init=False)
class RedisFleet(Fleet):
    """A fleet of breakers that share their state through Redis or Valkey.

    Pass it to :func:`breaky.open_supervisor`; every breaker of that
    supervisor joins the fleet under its name. Nothing connects until then,
    and the supervisor never waits for Redis.

    Args:
        url_or_client: either a URL, ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://`` (TLS) or ``unix://`` (the credentials, in the user
            info or the ``username`` and ``password`` query parameters, and
            TLS are passed to the client; no log record, error message or
            ``repr`` shows the credentials), or a
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
            self.url, self.client = check_url(url_or_client), None
        elif isinstance(url_or_client, (coredis.Redis, coredis.RedisCluster)):  # pyright: ignore[reportUnnecessaryIsInstance]
            self.url, self.client = None, url_or_client
        else:  # typed away, but a user may pass anything
            msg = f"url_or_client must be {EXPECTED}, got {url_or_client!r}"  # type: ignore[unreachable]
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

    def __repr__(self) -> str:
        return (
            f"<breaky.redis.RedisFleet {self._where} instance={self.instance!r} "
            f"quorum={self.quorum} prefix={self.prefix!r}>"
        )

    @property
    def _where(self) -> str:
        return redact(self.url) if self.url is not None else repr(self.client)

    @property
    def channel(self) -> str:
        """The pub/sub channel that announces the fleet's changes."""
        return self._settings.channel

    @property
    def instances_key(self) -> str:
        """The key of the instances' heartbeats."""
        return self._settings.instances_key

    def keys(self, breaker: str) -> list[str]:
        """The keys of one breaker: reports, fleet state, probe lease.

        The breaker's name is their hash tag: on Redis Cluster they share a
        slot, so one script may use them all.
        """
        return breaker_keys(self.prefix, breaker)

    @property
    def period(self) -> float:
        """Seconds between heartbeats (and renewals of reports and leases)."""
        return self._settings.period

    @property
    def _settings(self) -> Settings:
        """What a session with Redis needs to know of this fleet."""
        return Settings(
            url=self.url,
            client=self.client,
            instance=self.instance,
            token=self._token,
            quorum=self.quorum,
            prefix=self.prefix,
            report_ttl=self.report_ttl,
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
            transport = Transport(self._settings, link, self._where)
            changes = link.subscribe()
            task_status.started()
            await transport.run(changes)
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
