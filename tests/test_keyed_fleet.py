"""Keyed groups in a fleet, against a real redis-server.

Three instances (supervisors with a RedisFleet each, in this process), each
with the same keyed guard. A key that trips on a quorum of instances is held
OFF on every instance, under its name ``group[key]``; the other keys, and a
plain breaker of the same group name prefix, are untouched.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import coredis
import servers
import trio

import breaky
from breaky import State
from breaky.redis import RedisFleet

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from servers import ServerProcess

pytestmark = servers.coredis_runs_on_this_trio

TTL = 1.5


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - real I/O changes it
            await trio.sleep(0.01)


async def ok() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


async def down() -> None:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError


@contextlib.asynccontextmanager
async def instances(
    server: ServerProcess, count: int
) -> AsyncIterator[list[breaky.KeyedGuard]]:
    url = f"redis://127.0.0.1:{server.port}/0"
    groups: list[breaky.KeyedGuard] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(count):
            fleet = RedisFleet(url, instance=f"n{i}", quorum=2, report_ttl=TTL)
            sup = await stack.enter_async_context(breaky.open_supervisor(fleet=fleet))
            groups.append(
                sup.keyed_guard("upstream", failure_threshold=1, retry_timeout=30.0)
            )
        yield groups


async def test_a_key_tripped_on_a_quorum_is_held_off_everywhere(
    redis_server: ServerProcess,
) -> None:
    async with instances(redis_server, 3) as groups:
        for hosts in groups:
            for key in ("a", "b", "c"):
                assert await hosts.run(key, ok) == "ok"
        changes = groups[2].subscribe()
        for hosts in groups[:2]:  # a quorum of two instances sees "b" fail
            with contextlib.suppress(ConnectionRefusedError):
                await hosts.run("b", down)
        await until(lambda: groups[2]["b"].state is State.OFF)
        change = await changes.receive()
        assert (change.breaker, change.group, change.key) == (
            "upstream[b]",
            "upstream",
            "b",
        )
        assert change.reason.startswith("fleet OFF")
        assert await groups[2].run("b", ok) is breaky.OFF
        for hosts in groups:
            assert hosts["a"].state is hosts["c"].state is State.ON
        async with coredis.Redis(port=redis_server.port, decode_responses=True) as r:
            names = {key async for key in r.scan_iter(match="*upstream*")}
        # The fleet's keys in Redis name the group's key.
        assert any("upstream[b]" in n and n.endswith(":reports") for n in names)
        assert all("upstream[" in name for name in names), names
        if not any(name.endswith(":members") for name in names):
            # A fleet with a heartbeat per instance: healthy keys cost nothing.
            assert all("upstream[b]" in name for name in names), names
