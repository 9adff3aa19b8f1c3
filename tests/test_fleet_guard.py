"""Guards in a fleet, against a real redis-server: one prober's trials run.

Three instances, each its own supervisor with a :class:`breaky.redis.RedisFleet`
on one redis-server and ``sup.guard("api")``, share one dependency. Two of
them trip on their own failures: at quorum the fleet holds the third OFF
although it saw none. While the dependency is down, only the prober's trial
calls reach it; the other instances answer OFF and call nothing. Once it is
back, the prober's trial turns the fleet ON, and every instance is ON again.
Real I/O, so the real clock; limits are generous.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs
import pytest
import servers
import trio
from fleet_nodes import until

import breaky
from breaky import OFF, State
from breaky.redis import RedisFleet

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from servers import ServerProcess

pytestmark = servers.coredis_runs_on_this_trio

TTL = 1.5  # report_ttl: short, as the fleet tests use
RETRY_TIMEOUT = 0.2
POLICY = breaky.Policy(
    failure_threshold=2,
    retry_timeout=RETRY_TIMEOUT,
    call_timeout=1,
    failure_exceptions=ConnectionError,
)


@attrs.define
class Dependency:
    """What the instances call: down or not; who reached it, and when."""

    down: bool = False
    reached: list[tuple[str, float]] = attrs.Factory(list)

    async def get(self, instance: str) -> str:
        self.reached.append((instance, trio.current_time()))
        await trio.lowlevel.checkpoint()
        if self.down:
            raise ConnectionRefusedError(instance)
        return instance


@attrs.define
class Instance:
    """One instance: its guard, and whether its caller loop calls."""

    name: str
    guard: breaky.Guard
    calling: bool = True
    answers: list[object] = attrs.Factory(list)


async def instance(
    server: ServerProcess,
    name: str,
    dep: Dependency,
    *,
    task_status: trio.TaskStatus[Instance],
) -> None:
    """Run one instance until cancelled: a caller every 10 ms through its guard."""
    fleet = RedisFleet(
        f"redis://127.0.0.1:{server.port}/0", instance=name, quorum=2, report_ttl=TTL
    )
    async with breaky.open_supervisor(fleet=fleet) as sup:
        me = Instance(name, sup.guard("api", policy=POLICY))
        task_status.started(me)
        while True:
            if me.calling:
                with contextlib.suppress(ConnectionError):
                    me.answers.append(await me.guard.run(dep.get, name))
            await trio.sleep(0.01)


@contextlib.asynccontextmanager
async def fleet_of_three(
    server: ServerProcess, dep: Dependency
) -> AsyncIterator[list[Instance]]:
    async with trio.open_nursery() as nursery:
        instances = [
            await nursery.start(instance, server, f"n{i}", dep) for i in range(3)
        ]
        # Every instance has joined: a report from each names it a member.
        await trio.sleep(0.3)
        yield instances
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(60)
async def test_at_quorum_the_others_are_held_and_only_the_prober_trials(
    redis_server: ServerProcess,
) -> None:
    dep = Dependency()
    async with fleet_of_three(redis_server, dep) as (n0, n1, n2):
        assert await until(
            lambda: all(n.answers[-1:] == [n.name] for n in (n0, n1, n2))
        )
        # Only n0 and n1 call while the dependency goes down: they trip, and
        # the fleet holds n2 OFF, which saw no failure at all.
        n2.calling = False
        await trio.sleep(0.05)  # its call under way, if any, is answered
        dep.down = True
        took = await until(lambda: n2.guard.state is State.OFF)
        assert (n0.guard.state, n1.guard.state) == (State.OFF, State.OFF)
        assert took < 2.0
        stats = n2.guard.statistics()
        assert (stats.trips, stats.fleet_holds, stats.errors) == (0, 1, 0)
        assert await n2.guard.run(dep.get, "n2") is OFF

        # Everyone calls while it stays down: only one instance's trials run.
        await trio.sleep(2 * RETRY_TIMEOUT)  # the fleet has settled
        n2.calling = True
        since = trio.current_time()
        retries = {n.name: n.guard.statistics().retries for n in (n0, n1, n2)}
        await trio.sleep(2.0)
        reached = [(name, t) for name, t in dep.reached if t >= since]
        probers = {name for name, _ in reached}
        assert len(probers) == 1, reached
        (prober_name,) = probers
        # One trial per retry period (0.2 s), about 10 in 2 s; the others none.
        assert 5 <= len(reached) <= 12, reached
        for node in (n0, n1, n2):
            if node.name != prober_name:
                assert node.guard.statistics().retries == retries[node.name]
                assert node.answers[-1] is OFF

        # Back: the prober's trial turns the fleet ON, then every instance.
        dep.down = False
        await until(lambda: all(n.guard.state is State.ON for n in (n0, n1, n2)))
        await until(lambda: all(n.answers[-1:] == [n.name] for n in (n0, n1, n2)))
