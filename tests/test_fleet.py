"""Fleets against a real redis-server: several instances, faults on purpose.

Each instance is its own supervisor and RedisFleet in this process (one test
runs them as OS processes). Real I/O, so the real clock; limits are generous
except the targets the issue sets (OFF everywhere within 0.5 s).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import coredis
import pytest
import servers
import trio
from fleet_nodes import (
    ROOMY_TTL,
    TTL,
    Node,
    fleet_of,
    prober_of,
    trip,
    until,
    url_of,
)
from support import answered_calls

import breaky
from breaky import OFF, State
from breaky.redis import RedisFleet
from breaky.testing import internals

if TYPE_CHECKING:
    from servers import ServerProcess

pytestmark = servers.coredis_runs_on_this_trio


async def test_below_quorum_the_others_are_untouched(
    redis_server: ServerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with fleet_of(redis_server, 3, quorum=2) as (nodes, down):
        # Someone else's messages on the channel are ignored.
        async with coredis.Redis.from_url(url_of(redis_server)) as client:
            await client.publish("breaky:fleet", "not json")
            await client.publish("breaky:fleet", '{"breaker": "db"}')
        down["n0"] = True
        trip(nodes[0])
        assert nodes[0].db.state is State.OFF
        await trio.sleep(0.5)
        assert [n.db.state for n in nodes[1:]] == [State.ON, State.ON]
        assert await nodes[1].db.call("x") == "n1"
        # The lone instance keeps retrying on its own, and recovers alone.
        assert nodes[0].starts >= 3
        down["n0"] = False
        await until(lambda: nodes[0].db.state is State.ON)
        assert all(n.db.state is State.ON for n in nodes)
    assert not [r for r in caplog.records if "does not answer" in r.getMessage()]


async def test_at_quorum_every_instance_turns_off_within_half_a_second(
    redis_server: ServerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    async with fleet_of(redis_server, 4, quorum=2) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        await trio.sleep(0.1)
        assert [n.db.state for n in nodes] == [State.OFF] + [State.ON] * 3
        trip(nodes[1])
        took = await until(lambda: all(n.db.state is State.OFF for n in nodes))
        assert took < 0.5
        await until(
            lambda: all(c.new is State.OFF for n in nodes for c in n.changes[-1:])
        )
        for node in nodes[2:]:
            assert await node.db.call("x") is OFF
            (change,) = [c for c in node.changes if c.new is State.OFF]
            assert change.reason == "fleet OFF: 2 of 4 instances report OFF"
            stats = node.db.statistics()
            assert (stats.trips, stats.fleet_holds) == (0, 1)
        assert "breaker 'db' turned OFF (fleet OFF: 2 of 4 instances report OFF)" in [
            r.getMessage() for r in caplog.records
        ]


async def test_one_prober_while_off_then_every_instance_recovers(
    redis_server: ServerProcess,
) -> None:
    async with fleet_of(redis_server, 3, quorum=2) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        trip(nodes[1])
        await until(lambda: all(n.db.state is State.OFF for n in nodes))
        before = [n.starts for n in nodes]
        await trio.sleep(1.5)
        tries = [n.starts - b for n, b in zip(nodes, before, strict=True)]
        # One instance tries at the policy's rate (every 0.2 s); the others
        # try nothing at all.
        assert sorted(tries)[:2] == [0, 0]
        assert 4 <= max(tries) <= 9
        prober = nodes[tries.index(max(tries))]
        down["all"] = False
        await until(lambda: prober.db.state is State.ON)
        took = await until(lambda: all(n.db.state is State.ON for n in nodes))
        assert took < 1.0
        # The subscribers have seen it too (they run as tasks of their own).
        await until(
            lambda: all(sum(c.new is State.ON for c in n.changes) == 2 for n in nodes)
        )
        for node in nodes:
            if node is not prober:
                (change,) = [c for c in node.changes if c.new is State.ON][-1:]
                assert change.reason == (
                    f"the resource started after fleet ON: {prober.name} "
                    "started the resource"
                )
        # The reports are gone with the outage: one more trip is below quorum.
        trip(nodes[2])
        await trio.sleep(0.3)
        assert [n.db.state for n in nodes[:2]] == [State.ON, State.ON]


@pytest.mark.parametrize("how", ["closed", "cancelled"])
async def test_the_lease_passes_on_when_the_prober_goes(
    redis_server: ServerProcess, how: str
) -> None:
    async with fleet_of(redis_server, 3, quorum=2) as (nodes, down):
        down["all"] = True
        trip(nodes[0])
        trip(nodes[1])
        prober = await prober_of(nodes)
        if how == "cancelled":
            prober.scope.cancel()  # no goodbye: its lease expires
        else:
            # Its supervisor closes (its ``async with`` block ends): the
            # lease is released at once.
            prober.leave.set()
        rest = [n for n in nodes if n is not prober]
        took = await until(
            lambda: any(internals(n.db).hold.name == "PROBER" for n in rest)
        )
        assert took < (0.5 if how == "closed" else TTL)
        down["all"] = False
        await until(lambda: all(n.db.state is State.ON for n in rest))


async def test_calls_are_answered_while_redis_is_killed_frozen_and_back(
    redis_server: ServerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    answers: dict[str, int] = {}
    calls = 0

    async def caller(node: Node) -> None:
        nonlocal calls
        while True:
            calls += 1
            try:
                reply: Any = await node.db.call("x")
            except Exception as exc:
                reply = type(exc).__name__
            answers[str(reply)] = answers.get(str(reply), 0) + 1
            await trio.sleep(0.001)

    def logged(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    async with (
        fleet_of(redis_server, 3, quorum=2, ttl=ROOMY_TTL) as (nodes, down),
        trio.open_nursery() as callers,
    ):
        # On a busy machine an instance may have missed Redis (and said so)
        # while it joined: what is counted is what the outages make.
        lost_before = logged("does not answer")
        back_before = logged("Redis answers again")
        for node in nodes:
            callers.start_soon(caller, node)
        healthy = nodes[2]
        for outage in (1, 2):  # killed, then frozen
            # n0 and n1 fail; the fleet holds n2, which is healthy, OFF too.
            down["n0"] = down["n1"] = True
            trip(nodes[0])
            trip(nodes[1])
            await until(lambda: internals(healthy.db).hold.name == "HELD")
            if outage == 1:
                await redis_server.kill()
            else:
                redis_server.freeze()  # connections stay open, no answer
            # Each instance notices once, and n2 goes back to its own
            # retries: its resource is fine, so it turns ON alone.
            await until(
                lambda n=lost_before + 3 * outage: logged("does not answer") == n
            )
            await until(lambda: healthy.db.state is State.ON)
            down["n0"] = down["n1"] = False
            await until(lambda: all(n.db.state is State.ON for n in nodes))
            # Back: every instance re-joins.
            if outage == 1:
                await redis_server.start()
            else:
                redis_server.thaw()
            await until(
                lambda n=back_before + 3 * outage: logged("Redis answers again") == n
            )
        callers.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # One warning per instance per outage, not one per call or per retry.
    assert sum("does not answer" in r.getMessage() for r in warnings) == lost_before + 6
    assert answers.get("n2", 0) > 0
    assert answers.get("OFF", 0) > 0
    # Every call got exactly one answer (the last ones were cancelled).
    assert calls - sum(answers.values()) <= 3
    for node in nodes:
        stats = node.db.statistics()
        assert stats.calls == answered_calls(stats)


async def test_a_block_that_raises_comes_out_as_itself(
    redis_server: ServerProcess,
) -> None:
    # Cancelling coredis's pub/sub under Trio may raise ClosedResourceError
    # from its clean-up next to the Cancelled: only the block's error leaves.
    fleet = RedisFleet(url_of(redis_server), instance="a", report_ttl=TTL)
    with pytest.raises(KeyError) as raised:  # noqa: PT012
        async with breaky.open_supervisor(fleet=fleet) as sup:
            await sup.start_circuit_breaker("db", Node("a", fleet, bool).resource)
            await trio.sleep(0.3)  # connected, subscribed
            raise KeyError("mine")
    assert raised.type is KeyError
    # Cancelled from outside: nothing comes out at all.
    with trio.move_on_after(0.3):
        async with breaky.open_supervisor(fleet=fleet) as sup:
            await sup.start_circuit_breaker("db", Node("a", fleet, bool).resource)
            await trio.sleep_forever()


async def test_the_password_reaches_redis_and_no_log_record(
    redis_server: ServerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await redis_server.kill()
    redis_server.argv += ["--requirepass", "s3cret-pw"]
    await redis_server.start()
    async with fleet_of(redis_server, 2, quorum=1, password="s3cret-pw") as (  # noqa: S106
        nodes,
        down,
    ):
        down["all"] = True
        trip(nodes[0])
        await until(lambda: nodes[1].db.state is State.OFF)
    wrong = RedisFleet(url_of(redis_server, "wrong-pw"), instance="w")
    async with breaky.open_supervisor(fleet=wrong):
        await until(
            lambda: any("password is wrong" in r.getMessage() for r in caplog.records)
        )
    assert "wrong-pw" not in repr(wrong)
    for record in caplog.records:
        text = record.getMessage() + str(record.exc_info or "")
        assert "s3cret-pw" not in text
        assert "wrong-pw" not in text


async def test_a_fleet_serves_one_supervisor_at_a_time(
    redis_server: ServerProcess,
) -> None:
    fleet = RedisFleet(url_of(redis_server), instance="a")
    async with breaky.open_supervisor(fleet=fleet):
        with pytest.raises(RuntimeError, match="already serves a supervisor"):
            async with breaky.open_supervisor(fleet=fleet):
                pass  # pragma: no cover
    async with breaky.open_supervisor(fleet=fleet):
        pass  # and again, once the first has closed
