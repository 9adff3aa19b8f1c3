"""50 callers through a guard while a real HTTP server is down for 5 s.

Hypercorn (someone else's server) serves ``tests/asgi_app.py``; a small TCP
proxy of ours in front of it counts the connections it accepts, and which of
them found no server behind it: those are the requests that reached the dead
port (httpx opens a new connection for each of them, since the proxy closes
each one whose server is gone). The callers loop through one guard with
``retry_timeout=1``; the server is killed, stays down for 5 s and is started
again on the same port. While it is down, the guard lets one trial through
per retry period; once it is back, every caller is answered. aiobreaker, on
the same scenario in the same run, is measured for comparison (its figure is
printed and recorded, not asserted: it is not ours).

Real I/O, so the real clock: the limits are generous.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, TypeAlias

import aiobreaker
import attrs
import httpx
import pytest
import trio

import breaky
from breaky import OFF

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import servers

CALLERS = 50
DOWN_FOR = 5.0
RETRY_TIMEOUT = 1.0
FAILURE_THRESHOLD = 5
# How long a caller waits after an OFF answer or an error before it calls
# again (a client's retry loop); after a reply it calls again at once.
PAUSE = 0.02
# A connection kept for each caller, as a service with 50 callers would set.
LIMITS = httpx.Limits(max_keepalive_connections=CALLERS)


@attrs.define
class CountingProxy:
    """Forwards 127.0.0.1 connections to ``upstream``; counts what it accepts."""

    upstream: int
    port: int = 0
    accepted: int = 0
    # When each connection that found no server behind the proxy came.
    refused: list[float] = attrs.Factory(list)

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.upstream)
        except OSError:
            self.refused.append(trio.current_time())
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, server, nursery.cancel_scope)
            nursery.start_soon(_pump, server, client, nursery.cancel_scope)


async def _pump(
    source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope
) -> None:
    """Copy bytes one way; when either side ends, end both directions."""
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        both.cancel()


@attrs.define
class Figures:
    """What one library let through during one outage."""

    library: str
    # Requests that reached the dead port (as the proxy counts them).
    reached_dead_port: int = 0
    # Requests the breaker let through while the server was down: before it
    # first answered OFF (the calls that taught it), and after (its trials).
    sent_before_trip: int = 0
    sent_after_trip: int = 0
    # Seconds from the kill to the server accepting connections again.
    down_for: float = 0.0
    # Seconds from the server being back to every caller answered.
    recovered_in: float = math.inf
    # Seconds from the start to every caller answered: 50 new connections, the
    # floor that the recovery is held to, measured on this machine in this run.
    warmed_up_in: float = math.inf


Get: TypeAlias = "Callable[[], Awaitable[httpx.Response]]"


async def outage(
    library: str,
    client: httpx.AsyncClient,
    through: Callable[[Get], Awaitable[object]],
    server: servers.ServerProcess,
    proxy: CountingProxy,
) -> Figures:
    """Run ``CALLERS`` loops of ``through(get)`` while ``server`` is killed, restarted.

    ``through(get)`` awaits ``get()`` through the breaker: it returns the
    response, or OFF when the breaker refused the call, and raises
    ``httpx.HTTPError`` when the request failed, or ``breaky.CallTimeout``
    when the guard gave up on it (a request the dying server left hanging, or
    a slow one on a busy machine): the caller tries again either way.
    """
    figures = Figures(library)
    sent: list[float] = []

    async def get() -> httpx.Response:
        sent.append(trio.current_time())
        return await client.get("/")

    replied_at = [-math.inf] * CALLERS
    first_off: list[float] = []

    async def caller(n: int) -> None:
        while True:
            try:
                reply = await through(get)
            except (httpx.HTTPError, breaky.CallTimeout):
                await trio.sleep(PAUSE)
                continue
            if reply is OFF:
                if not first_off:
                    first_off.append(trio.current_time())
                await trio.sleep(PAUSE)
                continue
            assert isinstance(reply, httpx.Response)
            assert reply.status_code == 200
            replied_at[n] = trio.current_time()
            await trio.lowlevel.checkpoint()

    async def every_caller_replied_since(moment: float, within: float) -> float:
        with trio.fail_after(within):
            while min(replied_at) < moment:  # noqa: ASYNC110 - real I/O moves it
                await trio.sleep(0.01)
        return trio.current_time() - moment

    async with trio.open_nursery() as nursery:
        for n in range(CALLERS):
            nursery.start_soon(caller, n)
        figures.warmed_up_in = await every_caller_replied_since(
            trio.current_time(), within=60
        )
        refused_before = len(proxy.refused)
        await server.kill()
        killed = trio.current_time()
        first_off.clear()
        await trio.sleep(DOWN_FOR)
        await server.start()
        back = trio.current_time()
        figures.down_for = back - killed
        figures.reached_dead_port = len(proxy.refused[refused_before:])
        tripped = first_off[0] if first_off else math.inf
        while_down = [t for t in sent if killed <= t < back]
        figures.sent_before_trip = len([t for t in while_down if t < tripped])
        figures.sent_after_trip = len([t for t in while_down if t >= tripped])
        figures.recovered_in = await every_caller_replied_since(back, within=60)
        nursery.cancel_scope.cancel()
    return figures


@pytest.mark.timeout(300)  # two outages, on a machine that may be busy
# aiobreaker reads datetime.utcnow(), which Python 3.12 deprecates.
@pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")
async def test_callers_against_a_dead_server_send_one_trial_per_retry_period(
    http_server: servers.ServerProcess,
    record_property: Callable[[str, object], None],
) -> None:
    proxy = CountingProxy(http_server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        base_url = f"http://127.0.0.1:{proxy.port}"

        # No timeout of httpx's own: the guard's call_timeout is the one.
        async with httpx.AsyncClient(
            base_url=base_url,
            timeout=None,  # noqa: S113
            limits=LIMITS,
        ) as client:
            guard = breaky.Guard(
                "http",
                retry_timeout=RETRY_TIMEOUT,
                failure_threshold=FAILURE_THRESHOLD,
                # Generous: 50 callers that call again at once keep the server
                # busy, and on a busy machine (under coverage, beside other
                # jobs) a healthy server's reply took over 10 s; a timeout
                # would count as a failure, and trip.
                call_timeout=30,
                failure_exceptions=httpx.TransportError,
            )

            ours = await outage("breaky", client, guard.run, http_server, proxy)
            stats = guard.statistics()

        async with httpx.AsyncClient(
            base_url=base_url, timeout=2, limits=LIMITS
        ) as client:
            breaker = aiobreaker.CircuitBreaker(
                fail_max=FAILURE_THRESHOLD,
                timeout_duration=timedelta(seconds=RETRY_TIMEOUT),
            )

            async def through_aiobreaker(get: Get) -> object:
                try:
                    return await breaker.call_async(get)
                except aiobreaker.CircuitBreakerError:
                    return OFF

            theirs = await outage(
                "aiobreaker", client, through_aiobreaker, http_server, proxy
            )
        nursery.cancel_scope.cancel()

    for figures in (ours, theirs):
        print(figures)  # noqa: T201 - the figures docs/performance.md quotes
        record_property(figures.library, attrs.asdict(figures))
    # Once OFF, at most one trial per retry period while the server was down
    # (DOWN_FOR, and Hypercorn's start-up): the first a period after the trip,
    # each next one a period after the last failed.
    periods = math.ceil(ours.down_for / RETRY_TIMEOUT)
    assert 1 <= ours.sent_after_trip <= periods, ours
    # Before the trip, each caller had at most one request under way when the
    # server died, and each failure it saw before the guard had counted
    # FAILURE_THRESHOLD of them let it send one more.
    assert ours.sent_before_trip <= 2 * CALLERS, ours
    # The proxy saw no more dead-port requests than the guard let through
    # while the server was down, and those already under way when it died (one
    # per caller at most: a request whose connection was still being set up).
    sent = ours.sent_before_trip + ours.sent_after_trip
    assert ours.reached_dead_port <= sent + CALLERS, ours
    # Back: the next trial (within a period), then a reply for every caller
    # over 50 new connections, on a machine other jobs share: 0.5-2 s on a
    # quiet one; on a busy one, held to what 50 new connections took at the
    # start of the same run.
    limit = max(5 * RETRY_TIMEOUT, 2 * RETRY_TIMEOUT + 3 * ours.warmed_up_in)
    assert ours.recovered_in < limit, ours
    assert stats.trips == 1, stats
    assert 1 <= stats.retries <= periods + 1, stats  # the last one succeeded
    assert stats.pending == 0, stats
