"""Instances of a fleet for the tests: each its own supervisor and RedisFleet.

Run as a script, one instance is one OS process: ``python fleet_nodes.py URL
NAME QUORUM REPORT_TTL DOWN_FILE``. It starts the breaker ``db`` over a
resource that fails while ``DOWN_FILE`` exists, calls it every 10 ms, prints
each start attempt and each state change of its breaker as one line on
stdout, and runs until killed or until its stdin closes.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import coredis
import trio

import breaky
from breaky.redis import RedisFleet
from breaky.testing import internals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from servers import ServerProcess

POLICY = breaky.Policy(failure_threshold=2, retry_timeout=0.2, call_timeout=1)
TTL = 1.5  # report_ttl: short, so that leases and reports expire in a test
# report_ttl for a test that needs no short one: the fleet gives each round
# trip to Redis (connecting too) a third of it, up to 1 s, and a busy machine
# may take more than 0.5 s to connect to a cluster.
ROOMY_TTL = 3.0


def url_of(server: ServerProcess, password: str = "") -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{server.port}/0"


async def until(condition: Callable[[], bool], within: float = 5.0) -> float:
    """Poll ``condition`` (real I/O drives it); return how long it took."""
    start = trio.current_time()
    with trio.move_on_after(within):
        while not condition():  # noqa: ASYNC110 - real I/O changes it
            await trio.sleep(0.005)
        return trio.current_time() - start
    msg = f"not within {within} s: {condition.__doc__ or condition}"
    raise AssertionError(msg)


@contextlib.asynccontextmanager
async def fleet_of(
    server: ServerProcess,
    count: int,
    *,
    quorum: int = 2,
    policy: breaky.Policy = POLICY,
    password: str = "",
    ttl: float = TTL,
    source: Callable[[], str | Any] | None = None,
) -> AsyncIterator[tuple[list[Node], dict[str, bool]]]:
    """``count`` instances sharing one resource, whose outage a dict switches.

    Each instance's fleet uses ``source()`` (a URL or a coredis client of its
    own), by default the URL of ``server``.
    """
    down = {"all": False}
    for i in range(count):
        down[f"n{i}"] = False
    nodes = [
        Node(
            f"n{i}",
            RedisFleet(
                url_of(server, password) if source is None else source(),
                instance=f"n{i}",
                quorum=quorum,
                report_ttl=ttl,
            ),
            lambda i=i: down["all"] or down[f"n{i}"],
        )
        for i in range(count)
    ]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run, policy)
        # Every instance has joined: the last one's heartbeat counted them all
        # (a reason's "k of n" counts the instances whose heartbeat lives).
        # Read where the fleet keeps them: its instances key, in Redis.
        store = source() if server is None else url_of(server, password)
        await joined(store, nodes[0].fleet.instances_key, count, within=20)
        await trio.sleep(0.1)  # and each has looked at its breakers once
        yield nodes, down
        nursery.cancel_scope.cancel()


async def joined(store: str | Any, key: str, count: int, within: float = 10) -> None:
    """Wait until ``count`` instances' heartbeats are in ``store`` (URL or client)."""
    client = coredis.Redis.from_url(store) if isinstance(store, str) else store
    with trio.fail_after(within):
        async with client:
            while await client.zcard(key) < count:  # noqa: ASYNC110 - Redis
                await trio.sleep(0.005)


def trip(node: Node) -> None:
    for _ in range(POLICY.failure_threshold):
        node.db.failure()


async def prober_of(nodes: list[Node]) -> Node:
    """Wait until one instance is the fleet's prober, and return it."""
    # Which instance probes is the fleet's internal business (no public view
    # says so): these tests check that lease, so they read the machine.
    await until(lambda: any(internals(n.db).hold.name == "PROBER" for n in nodes))
    (prober,) = [n for n in nodes if internals(n.db).hold.name == "PROBER"]
    return prober


@attrs.define
class Node:
    """One instance: its fleet, its supervisor, what its resource saw."""

    name: str
    fleet: RedisFleet
    down: Callable[[], bool]
    starts: int = 0
    changes: list[breaky.StateChange] = attrs.Factory(list)
    sup: breaky.Supervisor | None = None
    breaker: breaky.CircuitBreaker[Any, Any] | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    # Set to leave the supervisor's ``async with`` block: it closes as usual.
    leave: trio.Event = attrs.Factory(trio.Event)
    on_change: Callable[[breaky.StateChange], None] | None = None
    on_start: Callable[[], None] | None = None
    # Set to leave the supervisor's ``async with`` block, as an app would.

    @property
    def db(self) -> breaky.CircuitBreaker[Any, Any]:
        assert self.breaker is not None
        return self.breaker

    async def resource(
        self,
        inbox: breaky.Inbox[Any, Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.starts += 1
        if self.on_start is not None:
            self.on_start()
        if self.down():
            raise ConnectionRefusedError(self.name)
        task_status.started()
        async for request in inbox:
            if self.down():
                request.fail(ConnectionResetError(self.name))
                raise ConnectionResetError(self.name)
            request.reply(self.name)

    async def run(
        self,
        policy: breaky.Policy = POLICY,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self.scope:
            async with breaky.open_supervisor(fleet=self.fleet) as sup:
                changes = sup.subscribe()
                self.sup = sup
                self.breaker = await sup.start_circuit_breaker(
                    "db", self.resource, policy=policy
                )
                task_status.started()
                async with trio.open_nursery() as watching:
                    watching.start_soon(self._watch, changes)
                    await self.leave.wait()
                    watching.cancel_scope.cancel()

    async def _watch(self, changes: breaky.StateChanges) -> None:
        async for change in changes:
            self.changes.append(change)
            if self.on_change is not None:
                self.on_change(change)


def main(argv: list[str]) -> None:
    url, name, quorum, ttl, down_file = argv
    path = Path(down_file)

    def say(what: str) -> None:
        print(f"{trio.current_time():.3f} {name} {what}", flush=True)  # noqa: T201

    node = Node(
        name,
        RedisFleet(url, instance=name, quorum=int(quorum), report_ttl=float(ttl)),
        path.exists,
    )
    node.on_change = lambda c: say(f"{c.old.name}->{c.new.name} {c.reason}")
    node.on_start = lambda: say("start")

    async def calls() -> None:
        # Traffic, so that the resource notices the outage by itself.
        while True:
            with contextlib.suppress(Exception):
                await node.db.call("x")
            await trio.sleep(0.01)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            nursery.start_soon(calls)
            say("ready")
            stdin = trio.lowlevel.FdStream(0)
            while await stdin.receive_some():
                pass
            nursery.cancel_scope.cancel()

    trio.run(run)


if __name__ == "__main__":
    main(sys.argv[1:])
