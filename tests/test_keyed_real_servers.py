"""One keyed guard over real HTTP servers: one dies, only its key goes OFF.

Three Hypercorn servers, one per "host", reached through one httpx client
behind one keyed guard (a key per host, as a crawler would have). While
callers keep calling every host, one server is killed: its key turns OFF,
the other keys stay ON and keep replying; it is started again and its key
comes back ON. Real time, generous limits, nothing asserts how fast.
"""

from __future__ import annotations

import collections
import contextlib
from typing import TYPE_CHECKING

import httpx
import servers
import trio

import breaky
from breaky import OFF, State
from breaky.testing import wait_for_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PATIENCE = 20.0


@contextlib.asynccontextmanager
async def hypercorns(n: int) -> AsyncIterator[list[servers.ServerProcess]]:
    started = [servers.hypercorn() for _ in range(n)]
    try:
        async with trio.open_nursery() as nursery:
            for server in started:
                nursery.start_soon(server.start)
        yield started
    finally:
        for server in started:
            await server.kill()


async def test_a_dead_host_turns_only_its_own_key_off() -> None:
    answers: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    stop = trio.Event()
    news = [trio.Event()]

    async def until(condition: Callable[[], bool]) -> None:
        with trio.fail_after(PATIENCE):
            while not condition():
                await news[0].wait()

    async with (
        hypercorns(3) as hosts_up,
        httpx.AsyncClient(timeout=None) as client,  # noqa: S113 - the guard's call_timeout
        breaky.open_supervisor() as sup,
    ):
        hosts = sup.keyed_guard(
            "upstream",
            failure_threshold=3,
            retry_timeout=0.2,
            call_timeout=2.0,
            failure_exceptions=(httpx.TransportError, breaky.CallTimeout),
        )
        urls = [f"http://127.0.0.1:{server.port}/" for server in hosts_up]

        async def get(url: str) -> str:
            response = await client.get(url)
            response.raise_for_status()
            return response.text

        async def keep_calling(url: str) -> None:
            host = httpx.URL(url).netloc.decode()
            while not stop.is_set():
                try:
                    answer = await hosts.run(host, get, url)
                except httpx.TransportError:
                    kind = "error"
                else:
                    kind = "off" if answer is OFF else answer
                answers[host][kind] += 1
                news[0].set()
                news[0] = trio.Event()
                await trio.sleep(0.01)

        async with trio.open_nursery() as callers:
            for url in urls:
                callers.start_soon(keep_calling, url)
            names = [httpx.URL(url).netloc.decode() for url in urls]
            dead, *alive = names
            await until(lambda: all(answers[name]["ok"] for name in names))
            await hosts_up[0].kill()
            with trio.fail_after(PATIENCE):
                await wait_for_state(hosts[dead], State.OFF)
            before = {name: answers[name]["ok"] for name in alive}
            await until(
                lambda: (
                    answers[dead]["off"] >= 5
                    and all(answers[name]["ok"] >= before[name] + 5 for name in alive)
                )
            )
            assert [hosts[name].state for name in alive] == [State.ON, State.ON]
            assert all(hosts[name].statistics().trips == 0 for name in alive)
            assert sorted(hosts) == sorted(names)
            await hosts_up[0].start()  # same port: the trial succeeds
            with trio.fail_after(PATIENCE):
                await wait_for_state(hosts[dead], State.ON)
            stop.set()
        stats = hosts.statistics()
    assert stats.trips == 1
    assert stats.not_on == {}
    total = sum(sum(counter.values()) for counter in answers.values())
    assert stats.calls == total  # every call had one answer
    assert stats.replies == sum(counter["ok"] for counter in answers.values())
    assert stats.off == sum(counter["off"] for counter in answers.values())
