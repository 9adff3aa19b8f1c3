"""Real processes and real sockets on 127.0.0.1: servers die and come back.

The servers run in subprocesses and speak over real sockets, so these tests
use Trio's mock clock with a small autojump threshold: time jumps ahead only
once everything has been idle for a couple of real milliseconds, which a
round trip on the loopback never is.
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import servers
import trio
import trio.testing

import breaky
from breaky import OFF, State
from breaky._demo.kv import KVError, kv_connection, serve
from breaky._demo.servers import KVServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


# Quick to trip and to come back, as the demo's.
POLICY = breaky.Policy(
    failure_threshold=3,
    retry_timeout=0.5,
    retry_backoff=2,
    max_retry_timeout=2,
    call_timeout=1,
)


@pytest.fixture
def clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    mock_clock.autojump_threshold = 0.002
    return mock_clock


@attrs.define
class Tally:
    calls: int = 0
    answers: dict[str, int] = attrs.Factory(dict)

    def add(self, kind: str) -> None:
        self.answers[kind] = self.answers.get(kind, 0) + 1

    @property
    def answered(self) -> int:
        return sum(self.answers.values())


async def keep_calling(
    call: Callable[[], Awaitable[object]], tally: Tally, stop: trio.Event
) -> None:
    while not stop.is_set():
        tally.calls += 1
        try:
            answer = await call()
        except breaky.ResourceLost:
            tally.add("lost")
        except breaky.CallTimeout:
            tally.add("timeout")
        else:
            tally.add("off" if answer is OFF else "reply")
        await trio.sleep(0.01)


async def wait_for(breaker: breaky.CircuitBreaker[Any, Any], state: State) -> float:
    """Wait until ``breaker`` is in ``state``; return the mock time it took."""
    start = trio.current_time()
    changes = breaker.subscribe()
    while breaker.state is not state:
        await changes.receive()
    return trio.current_time() - start


async def test_the_kv_protocol(clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, 0)
        async with breaky.open_supervisor() as sup:
            kv = await sup.start_circuit_breaker("kv", kv_connection, port)
            assert kv.resource == f"127.0.0.1:{port}"
            assert await kv.call("GET a") is None
            assert await kv.call("SET a 1 2") == "OK"
            assert await kv.call("GET a") == "1 2"
            with pytest.raises(KVError, match="unknown command 'DEL'"):
                await kv.call("DEL a")
            # A client that hangs up mid-line does not bother the server.
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"GET")
            assert await kv.call("GET a") == "1 2"
        nursery.cancel_scope.cancel()


async def test_a_killed_tcp_server_trips_the_breaker_and_its_return_heals_it(
    clock: trio.testing.MockClock,
) -> None:
    server = KVServer()
    await server.start()
    tally = Tally()
    stop = trio.Event()
    try:
        async with breaky.open_supervisor() as sup:
            # No call timeout: the mock clock could jump to it while a real
            # reply is on its way (see the module's docstring).
            kv = await sup.start_circuit_breaker(
                "kv", kv_connection, server.port, policy=POLICY, call_timeout=None
            )
            async with trio.open_nursery() as callers:
                for n in range(3):
                    callers.start_soon(
                        keep_calling, lambda n=n: kv.call(f"SET k{n} v"), tally, stop
                    )
                await trio.sleep(1)
                for _ in range(2):
                    await server.kill()
                    # A crash, then failed starts: OFF at once.
                    assert await wait_for(kv, State.OFF) <= 1
                    await trio.sleep(3)
                    assert kv.state is State.OFF
                    await server.start()
                    # ON again at the next retry: at most the longest wait.
                    assert await wait_for(kv, State.ON) <= POLICY.max_retry_timeout
                    await trio.sleep(1)
                stop.set()
            stats = kv.statistics()
    finally:
        with trio.CancelScope(shield=True):
            await server.kill()
            await server.kill()  # killing a dead server is harmless
    assert tally.answered == tally.calls == stats.calls
    assert tally.answers["reply"] == stats.replies > 0
    assert tally.answers["off"] == stats.off > 0
    assert stats.trips == 2


async def test_a_server_that_cannot_listen_is_reported(
    clock: trio.testing.MockClock,
) -> None:
    first = KVServer()
    await first.start()
    second = KVServer()
    second.port = first.port  # taken: the second server cannot bind it
    try:
        with pytest.raises(RuntimeError, match="exited before it listened"):
            await second.start()
    finally:
        await first.kill()


def http_server() -> servers.ServerProcess:
    """``python -m http.server`` on 127.0.0.1, killed and revived by the test."""
    port = servers.free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    return servers.ServerProcess(argv, port, "http.server")


async def http_api(
    inbox: breaky.Inbox[str, int],
    base_url: str,
    *,
    task_status: trio.TaskStatus[httpx.AsyncClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """An HTTP API client: one health check to start, then a GET per request."""
    # No timeout of httpx's own: the breaker's call timeout is the one.
    async with httpx.AsyncClient(base_url=base_url, timeout=None) as client:  # noqa: S113
        (await client.get("/")).raise_for_status()  # refused: a failed start
        task_status.started(client)
        async for request in inbox:
            response = await client.get(request.message)  # a transport error: a crash
            request.reply(response.status_code)


async def test_httpx_against_an_http_server_that_dies_and_returns(
    clock: trio.testing.MockClock,
) -> None:
    server = http_server()
    await server.start()
    tally = Tally()
    stop = trio.Event()
    try:
        async with breaky.open_supervisor() as sup:
            # http.server can take longer than the autojump threshold to
            # answer; with a call timeout the mock clock would jump to it.
            api = await sup.start_circuit_breaker(
                "api",
                http_api,
                f"http://127.0.0.1:{server.port}",
                policy=POLICY,
                call_timeout=None,
            )
            assert isinstance(api.resource, httpx.AsyncClient)
            assert await api.call("/no-such-page") == 404
            async with trio.open_nursery() as callers:
                callers.start_soon(keep_calling, lambda: api.call("/"), tally, stop)
                await trio.sleep(1)
                await server.kill()
                assert await wait_for(api, State.OFF) <= 1
                await server.start()
                assert await wait_for(api, State.ON) <= POLICY.max_retry_timeout
                await trio.sleep(1)
                stop.set()
            stats = api.statistics()
    finally:
        with trio.CancelScope(shield=True):
            await server.kill()
    assert tally.answered == tally.calls
    assert tally.answers["reply"] > 0
    assert tally.answers["off"] > 0
    assert stats.trips == 1
