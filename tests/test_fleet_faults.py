"""The fleet under faults (issue 22): lost data, churned keys, credentials, failovers.

Real servers started by the fixtures: a redis-server, and for the failover a
primary, its replica and a Sentinel. Real I/O, so the real clock; the limits
are generous (the suite must pass on a busy machine), and each test fails
far outside them without its fix.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc
from typing import TYPE_CHECKING, Any

import coredis
import pytest
import servers
import trio
from coredis.connection import TCPLocation
from fleet_nodes import TTL, Node, fleet_of, prober_of, trip, until, url_of

import breaky
from breaky import State
from breaky._demo import servers as _servers
from breaky.redis import RedisFleet
from breaky.testing import internals

if TYPE_CHECKING:
    from pathlib import Path

    from servers import ServerProcess

pytestmark = servers.coredis_runs_on_this_trio

FLEET_KEY = "breaky:{db}:fleet"


def hold(node: Node) -> str:
    # Who probes is the fleet's internal business (no public view says so):
    # as fleet_nodes.prober_of, these tests read the machine's hold.
    hold = internals(node.db).hold
    assert hold is not None
    return hold.name


async def rebuilt(server: ServerProcess, nodes: list[Node], within: float) -> float:
    """Wait until Redis holds the fleet's OFF state and one instance probes.

    Return how long it took.
    """
    start = trio.current_time()
    async with coredis.Redis.from_url(url_of(server)) as client:
        with trio.fail_after(within):
            while not (  # noqa: ASYNC110 - real I/O changes it
                await client.exists([FLEET_KEY])
                and sorted(hold(n) for n in nodes) == ["HELD", "HELD", "PROBER"]
            ):
                await trio.sleep(0.02)
    return trio.current_time() - start


async def one_prober_starts(nodes: list[Node], seconds: float = 1.0) -> None:
    """For ``seconds``, only the prober (the same one) makes starts."""
    (prober,) = [n for n in nodes if hold(n) == "PROBER"]
    before = [n.starts for n in nodes]
    await trio.sleep(seconds)
    for node, then in zip(nodes, before, strict=True):
        if node is not prober:
            assert node.starts == then, (node.name, node.starts - then)
    assert hold(prober) == "PROBER"


async def test_the_quorum_re_forms_after_redis_loses_its_data(
    redis_server: ServerProcess,
) -> None:
    # Defect 1: after FLUSHALL nobody reported again, and each instance
    # probed on its own for good.
    async with fleet_of(redis_server, 3, quorum=2) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        trip(nodes[1])
        await prober_of(nodes)
        await until(lambda: sorted(map(hold, nodes)) == ["HELD", "HELD", "PROBER"])
        async with coredis.Redis.from_url(url_of(redis_server)) as client:
            await client.flushall()
        took = await rebuilt(redis_server, nodes, within=6 * TTL)
        print(f"quorum re-formed {took:.2f} s after FLUSHALL")  # noqa: T201
        await one_prober_starts(nodes)


async def test_the_quorum_re_forms_when_the_dependency_flaps(
    redis_server: ServerProcess,
) -> None:
    # Defect 1, its other path: the prober's start succeeds (the fleet turns
    # ON), the others' retries fail, then the prober trips again: each of
    # them is OFF by its own failures and must report so.
    async with fleet_of(redis_server, 3, quorum=2) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        trip(nodes[1])
        prober = await prober_of(nodes)
        for node in nodes:
            down[node.name] = node is not prober
        down["all"] = False
        await until(lambda: prober.db.state is State.ON)
        # Every instance has heard the fleet turn ON; the others' retries fail.
        await until(lambda: all(hold(n) == "NONE" for n in nodes))
        rest = [n for n in nodes if n is not prober]
        await until(lambda: all(n.starts >= 2 for n in rest))
        down[prober.name] = True
        trip(prober)
        took = await rebuilt(redis_server, nodes, within=6 * TTL)
        print(f"quorum re-formed {took:.2f} s after the flap")  # noqa: T201
        await one_prober_starts(nodes)


async def ok() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


def fleet_memory(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the fleet, the groups and the core, still alive.

    (Not the guards' call path: their calls' cancel scopes come and go with
    Trio's garbage, by the ten kilobytes.)
    """
    rooms = ["*/breaky/_fleet/*", "*/breaky/_groups/*", "*/breaky/_core/*"]
    filters = [tracemalloc.Filter(True, r) for r in rooms]
    filters.append(tracemalloc.Filter(False, "*/breaky/_core/calls.py"))
    kept = snapshot.filter_traces(filters)
    return sum(stat.size for stat in kept.statistics("filename"))


@pytest.mark.timeout(120)
async def test_forgotten_keys_leave_nothing_behind_in_the_fleet(
    redis_server: ServerProcess,
) -> None:
    # Defect 5: the fleet kept an entry per key ever forgotten.
    fleet = RedisFleet(url_of(redis_server), instance="a", report_ttl=TTL)
    churned = 4000
    async with breaky.open_supervisor(fleet=fleet) as sup:
        # A small bound: each new key evicts (forgets) the least recent one.
        hosts = sup.keyed_guard("hosts", max_keys=20)

        async def churn(start: int) -> None:
            for i in range(start, start + churned):
                assert await hosts.run(f"h{i}", ok) == "ok"
            await trio.sleep(2 * TTL)  # the fleet has synced every change
            gc.collect()

        await churn(0)  # warm: queues and caches at their working size
        tracemalloc.start()
        try:
            await churn(churned)
            before = fleet_memory(tracemalloc.take_snapshot())
            await churn(2 * churned)
            after = fleet_memory(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
    grown = after - before
    print(f"{churned} more keys forgotten: {grown} bytes kept")  # noqa: T201
    # A leak of one entry per key is ~100 bytes a key (400 kB here).
    assert grown < 10 * churned, grown


def credentials_shown(caplog: pytest.LogCaptureFixture, *secrets: str) -> list[str]:
    """Log records (any logger, any level) that show one of ``secrets``."""
    return [
        record.getMessage()
        for record in caplog.records
        for text in [record.getMessage() + str(record.exc_info or "")]
        if any(secret in text for secret in secrets)
    ]


async def test_credentials_in_the_query_string_are_never_shown(
    redis_server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # Defect 6: coredis honours ?password= (and ?username=); the fleet's
    # repr, its records and its ValueError printed them.
    caplog.set_level(logging.DEBUG)
    await redis_server.kill()
    redis_server.argv += ["--requirepass", "s3cret-pw"]
    await redis_server.start()
    port = redis_server.port
    good = f"redis://127.0.0.1:{port}/0?username=default&password=s3cret-pw"
    async with fleet_of(
        redis_server,
        2,
        quorum=1,
        password="s3cret-pw",  # noqa: S106 - for the test's own client
        source=lambda: good,
    ) as (nodes, down):
        down["all"] = True
        trip(nodes[0])  # the password works: the fleet holds the other OFF
        await until(lambda: nodes[1].db.state is State.OFF)
        assert "s3cret-pw" not in repr(nodes[0].fleet)
        assert "password=***" in repr(nodes[0].fleet)
    wrong = RedisFleet(
        f"redis://127.0.0.1:{port}/0?db=0&username=admin&password=wrong-pw",
        instance="w",
    )
    async with breaky.open_supervisor(fleet=wrong):
        await until(lambda: any("password is wrong" in m for m in errors(caplog)))
    assert "username=***&password=***" in repr(wrong)
    for bad in [
        "http://127.0.0.1/0?password=wrong-pw",
        "redis://127.0.0.1:x/0?username=admin&password=wrong-pw",
        "redis://admin:wrong-pw@[::1/0",
    ]:
        with pytest.raises(ValueError, match="url_or_client must be") as raised:
            RedisFleet(bad)
        assert "wrong-pw" not in str(raised.value)
        assert "admin" not in str(raised.value)
    assert not credentials_shown(caplog, "s3cret-pw", "wrong-pw", "admin")


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def beaten_since(client: coredis.Redis[Any], since_ms: int) -> set[str]:
    """Instances whose heartbeat this server renewed after ``since_ms`` (its clock)."""
    # A heartbeat's score is its expiry: the server's time plus report_ttl.
    scores = await client.zrange("breaky:instances", 0, -1, withscores=True)
    ttl_ms = TTL * 1000
    return {str(m) for m, s in scores if float(s) - ttl_ms > since_ms}


@pytest.mark.timeout(120)
async def test_a_sentinel_failover_moves_the_fleet_within_report_ttl(
    redis_server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Defect 8: after SENTINEL FAILOVER the old primary still answers (as a
    # primary, for seconds): the fleet kept writing there for ~11 s.
    await redis_server.kill()
    redis_server.argv += ["--dir", str(tmp_path)]  # the sync's file
    await redis_server.start()
    replica = _servers.redis_server(redis_server.argv[0])
    replica.argv += ["--replicaof", "127.0.0.1", str(redis_server.port)]
    replica.argv += ["--dir", str(tmp_path)]
    await replica.start()
    watcher = servers.sentinel(redis_server.argv[0], redis_server.port, tmp_path)
    await watcher.start()
    try:
        async with (
            coredis.Sentinel([TCPLocation("127.0.0.1", watcher.port)]) as sentinel,
            coredis.Redis(
                "127.0.0.1", watcher.port, decode_responses=True
            ) as sentinel_client,
            coredis.Redis("127.0.0.1", replica.port, decode_responses=True) as promoted,
        ):
            # The sentinel knows the replica, in sync (it promotes only those).
            with trio.fail_after(30):
                while not await sentinel.discover_replicas("breaky"):  # noqa: ASYNC110
                    await trio.sleep(0.1)
                while (await promoted.info("replication")).get(  # noqa: ASYNC110
                    "master_link_status"
                ) != "up":
                    await trio.sleep(0.1)
            async with fleet_of(
                redis_server,
                2,
                quorum=1,
                source=lambda: sentinel.primary_for("breaky"),
            ) as (nodes, down):
                await sentinel_client.sentinel_failover("breaky")
                # The Sentinels name the replica, and it serves as the primary.
                with trio.fail_after(30):
                    while (await sentinel.discover_primary("breaky"))[1] != (  # noqa: ASYNC110
                        replica.port
                    ) or (await promoted.info("replication"))["role"] != "master":
                        await trio.sleep(0.02)
                start = trio.current_time()
                since = await now_ms(promoted)
                with trio.fail_after(4 * TTL):
                    while await beaten_since(promoted, since) != {"n0", "n1"}:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                took = trio.current_time() - start
                print(f"the fleet moved {took:.2f} s after the failover")  # noqa: T201
                # Nothing of the fleet's is left on the old primary: its
                # subscription moved too (the Sentinels' own clients are named).
                # Connections are closed as the sessions end: on a busy
                # machine that takes a moment, so it is polled, with room.
                async with coredis.Redis(
                    "127.0.0.1", redis_server.port, decode_responses=True
                ) as old:
                    me = await old.client_id()
                    left: list[Any] = []
                    with trio.move_on_after(8 * TTL):
                        while True:
                            left = [
                                c
                                for c in await old.client_list()
                                if int(c["id"]) != me
                                and not str(c.get("name", "")).startswith("sentinel-")
                            ]
                            if not left:
                                break
                            await trio.sleep(0.05)
                assert left == [], left
                down["all"] = True
                trip(nodes[0])  # the fleet works on the new primary
                await until(lambda: nodes[1].db.state is State.OFF)
            # One warning per instance, which says what happened.
            warned = [
                r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            ]
            fleet_warnings = [m for m in warned if m.startswith("fleet n")]
            assert len(fleet_warnings) == 2, fleet_warnings
            assert all("the fleet follows it" in m for m in fleet_warnings)
    finally:
        await watcher.kill()
        await replica.kill()


async def now_ms(client: coredis.Redis[Any]) -> int:
    """The server's clock, in ms."""
    when = await client.time()
    return int(when.timestamp() * 1000)


async def test_a_silent_sentinel_does_not_stop_the_fleet(
    redis_server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The fleet asks the Sentinels where the primary is once a period; none
    # answering is no reason to leave a primary that answers.
    watcher = servers.sentinel(redis_server.argv[0], redis_server.port, tmp_path)
    await watcher.start()
    try:
        async with (
            coredis.Sentinel([TCPLocation("127.0.0.1", watcher.port)]) as sentinel,
            fleet_of(
                redis_server,
                2,
                quorum=1,
                source=lambda: sentinel.primary_for("breaky"),
            ) as (nodes, down),
        ):
            await watcher.kill()
            await trio.sleep(TTL)  # three periods: three questions unanswered
            down["all"] = True
            trip(nodes[0])
            await until(lambda: nodes[1].db.state is State.OFF)
            fleet_records = [r for r in caplog.records if r.name == "breaky"]
            assert not [
                r.getMessage() for r in fleet_records if "fleet n" in r.getMessage()
            ]
    finally:
        await watcher.kill()
