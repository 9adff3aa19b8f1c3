"""Keyed groups: the call path, memory per key, and the sweep's cost.

- ``hosts.run(key, fn)`` on a live key (one of 10,000) against a plain
  guard's ``run(fn)``, in turns in the same rounds.
- Memory per live guard key (tracemalloc, key strings included), against
  the 2 KiB budget; a keyed resource breaker's key against a resource
  breaker started by hand.
- The idle sweep's time per forgotten key with many keys alive against
  that with ten times fewer: a sweep looks at the keys it forgets, not at
  the others.
- A new key refused at the bound, with 10,000 keys alive and every one OFF
  (in use), against a call to one of those OFF keys: making room looks at
  each key in use once per use of it, not at every key on every refusal.
- In a fleet on a real redis-server: the commands per second of one
  instance whose keyed guard has 10,000 live keys, 10 of them OFF, against
  the same instance whose 10,000 keys are all ON (reported, no target: a
  healthy key costs nothing, an OFF key its report's renewal).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import trio

import breaky
from benchmarks._harness import Result, echo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_US = 1e6
# This thread's CPU time, not the wall clock: on a machine shared with other
# work, what others run does not count (their effect on caches still does).
_cpu = time.thread_time
# More than any CPU cache.
_CACHE_FLUSH = 256 * 2**20


async def one_checkpoint(i: int = 0) -> int:
    await trio.lowlevel.checkpoint()
    return i


async def echo_key(
    inbox: breaky.Inbox[Any, Any], key: str, *, task_status: Any
) -> None:
    del key
    await echo(inbox, task_status=task_status)


async def bench_call_path(quick: bool) -> list[Result]:
    # Short turns, many of them, and the fastest of each side on this
    # thread's CPU time: the least disturbed turns are the ones to compare.
    n, count, keys = (2_000, 3, 1_000) if quick else (5_000, 41, 10_000)
    async with breaky.open_supervisor() as sup:
        plain = sup.guard("plain", call_timeout=None)
        plains = [sup.guard(f"plain-{i}", call_timeout=None) for i in range(keys // 10)]
        hosts = sup.keyed_guard("hosts", call_timeout=None, max_keys=keys)
        names = [f"host-{i}" for i in range(keys)]
        for name in names:
            await hosts.run(name, one_checkpoint)
        hot = names[: keys // 10]  # a crawler's working set: 10% of the keys

        async def guarded(m: int) -> float:
            start = _cpu()
            for i in range(m):
                await plain.run(one_checkpoint, i)
            return (_cpu() - start) / m

        async def keyed(m: int) -> float:
            start = _cpu()
            for i in range(m):
                await hosts.run("host-5", one_checkpoint, i)
            return (_cpu() - start) / m

        async def guards_in_turn(m: int) -> float:
            start = _cpu()
            for i in range(m):
                await plains[i % len(plains)].run(one_checkpoint, i)
            return (_cpu() - start) / m

        async def keys_in_turn(m: int) -> float:
            start = _cpu()
            for i in range(m):
                await hosts.run(hot[i % len(hot)], one_checkpoint, i)
            return (_cpu() - start) / m

        best = await _rounds(
            n,
            count,
            {
                "guard": guarded,
                "keyed": keyed,
                "guards in turn": guards_in_turn,
                "keys in turn": keys_in_turn,
            },
            min,
        )
    return [
        Result(
            f"hosts.run(key, fn) on a live key of {keys:,} vs guard.run(fn)",
            "us",
            best["keyed"] * _US,
            best["guard"] * _US,
            "a plain guard's run(fn)",
            # The key's look-up and one frame more: the keyed run() awaits
            # the key's Guard.run() rather than repeating its lean path.
            target=1.25,
            note="the fastest of each side's turns",
        ),
        Result(
            f"{len(hot):,} keys in turn vs {len(plains):,} guards in turn",
            "us",
            best["keys in turn"] * _US,
            best["guards in turn"] * _US,
            "as many plain guards, called in turn",
            note="a working set: the lookup and the LRU move, caches cold alike",
        ),
    ]


async def bench_guard_key_memory(quick: bool) -> Result:
    n = 10_000 if quick else 100_000
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("hosts", max_keys=n)
        hosts["warm-up"]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            hosts[f"host-{i}"]
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert len(hosts) == n  # noqa: S101 - all alive
    return Result(
        f"memory per live guard key ({n:,} keys)",
        "bytes",
        grown / n,
        2048.0,
        "the 2 KiB budget",
        target=1.0,
    )


async def bench_breaker_key_memory(quick: bool) -> Result:
    n = 200 if quick else 2_000
    grown: dict[str, float] = {}
    async with breaky.open_supervisor() as sup:
        shards = sup.keyed_breaker("shards", echo_key, max_keys=n + 1)
        await shards.call("warm-up", 0)
        await sup.start_circuit_breaker("warm-up", echo)
        for side in ("keyed", "by hand"):
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                if side == "keyed":
                    await shards.call(f"s{i}", i)  # started, and serving
                else:
                    await sup.start_circuit_breaker(f"b{i}", echo)
            gc.collect()
            grown[side] = (tracemalloc.get_traced_memory()[0] - before) / n
            tracemalloc.stop()
    return Result(
        f"memory per keyed resource breaker key ({n:,})",
        "bytes",
        grown["keyed"],
        grown["by hand"],
        "a resource breaker started by hand",
        target=1.2,
    )


async def _sweep_time(alive: int, forgotten: int) -> float:
    """Seconds per forgotten key of one sweep, with ``alive`` keys alive."""
    async with breaky.open_supervisor() as sup:
        # The sweeper task would wait a year: the sweeps are called here.
        hosts = sup.keyed_guard("hosts", max_keys=alive, idle_timeout=3e7)
        for i in range(forgotten):
            hosts[f"idle-{i}"]
        hosts._sweep()  # noqa: SLF001 - the idle keys are now before the last tick
        for i in range(alive - forgotten):
            hosts[f"busy-{i}"]
        gc.collect()
        start = time.perf_counter()
        hosts._sweep()  # noqa: SLF001 - one sweep, timed
        took = time.perf_counter() - start
        assert len(hosts) == alive - forgotten  # noqa: S101 - exactly those
    return took / forgotten


async def bench_refusal(quick: bool) -> Result:
    keys, n, count = (1_000, 1_000, 3) if quick else (10_000, 5_000, 11)
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "hosts",
            max_keys=keys,
            idle_timeout=3e7,
            failure_threshold=1,
            retry_timeout=3e7,
            call_timeout=None,
        )
        names = [f"host-{i}" for i in range(keys)]
        for name in names:
            with contextlib.suppress(ConnectionRefusedError):
                await hosts.run(name, _refused)
        assert hosts.statistics().states[breaky.State.OFF] == keys  # noqa: S101
        new_names = [f"new-{i}" for i in range(n)]
        turn = 0

        async def existing(m: int) -> float:
            # Each call uses another OFF key: the next refusal looks at it.
            nonlocal turn
            start = _cpu()
            for i in range(turn * m, (turn + 1) * m):
                await hosts.run(names[i % keys], one_checkpoint, i)
            turn += 1
            return (_cpu() - start) / m

        async def refused(m: int) -> float:
            start = _cpu()
            for i in range(m):
                await hosts.run(new_names[i], one_checkpoint, i)
            return (_cpu() - start) / m

        best = await _rounds(
            n, count, {"existing": existing, "refused": refused}, statistics.median
        )
        stats = hosts.statistics()
        assert stats.refused == n * count  # noqa: S101 - every one refused
        assert stats.off == 2 * n * count  # noqa: S101 - and every call OFF
    return Result(
        f"a new key refused, {keys:,} keys alive and OFF, vs a call to one",
        "us",
        best["refused"] * _US,
        best["existing"] * _US,
        "a call to an OFF key (each call another key)",
        target=2.0,
        note="O(1) amortized: each key in use looked at once per use",
    )


def _flush_caches() -> None:
    scratch = bytearray(_CACHE_FLUSH)
    scratch[:] = bytes(_CACHE_FLUSH)  # written through: evicts what was cached


async def bench_sweep(quick: bool) -> Result:
    small, count = (1_000, 3) if quick else (10_000, 5)
    large, forgotten = small * 10, small // 10
    times: dict[int, list[float]] = {small: [], large: []}
    for _ in range(count):
        for alive in (small, large):
            times[alive].append(await _sweep_time(alive, forgotten))
    few, many = (statistics.median(times[n]) for n in (small, large))
    return Result(
        f"sweep per forgotten key, {large:,} vs {small:,} alive",
        "us",
        many * _US,
        few * _US,
        f"the same sweep with {small:,} keys alive",
        target=1.3,
    )


async def _fleet_rate(url: str, keys: int, off: int, window: float) -> float:
    """Commands/s of one instance: ``keys`` live keys, ``off`` of them OFF."""
    from benchmarks.fleet import commands_per_second  # noqa: PLC0415 - redis extra
    from breaky.redis import RedisFleet  # noqa: PLC0415

    prefix = f"keyed{keys}-{off}"
    fleet = RedisFleet(url, instance=prefix, prefix=prefix, report_ttl=3)
    async with breaky.open_supervisor(fleet=fleet) as sup:
        hosts = sup.keyed_guard(
            "upstream",
            max_keys=keys,
            idle_timeout=3600.0,
            failure_threshold=1,
            retry_timeout=3600.0,
        )
        for i in range(keys):
            await hosts.run(f"host-{i}", one_checkpoint)
        for i in range(off):
            with contextlib.suppress(ConnectionError):
                await hosts.run(f"host-{i}", _refused)
        assert hosts.statistics().states[breaky.State.OFF] == off  # noqa: S101
        # Joined (each key looked at once), and past one period.
        await trio.sleep(fleet.report_ttl / 3 * 2)  # two periods
        return await commands_per_second(url, window)


async def _refused() -> None:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError


async def bench_fleet_keys(quick: bool) -> list[Result]:
    """The fleet's Redis traffic for a keyed group, or none without Redis."""
    from breaky._demo.servers import redis_server, redis_server_binary  # noqa: PLC0415

    binary = redis_server_binary()
    try:
        import coredis  # noqa: F401, PLC0415
    except ImportError:
        binary = None
    if binary is None:
        print("keyed fleet benchmark skipped: no redis-server, or no coredis")
        return []
    server = redis_server(binary)
    await server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    keys, window = (1_000, 2.0) if quick else (10_000, 10.0)
    try:
        some_off = await _fleet_rate(url, keys, 10, window)
        all_on = await _fleet_rate(url, keys, 0, window)
    finally:
        await server.kill()
    return [
        Result(
            f"Redis commands/s, {keys:,} live keys, 10 OFF vs none OFF",
            "cmd/s",
            some_off,
            all_on,
            f"the same {keys:,} keys, all ON",
            note="one instance, report_ttl=3 (a period of 1 s)",
        )
    ]


async def _rounds(
    n: int,
    count: int,
    pairs: dict[str, Callable[[int], Awaitable[float]]],
    pick: Callable[[list[float]], float],
) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(count):
        for name, measure in pairs.items():
            gc.collect()
            samples[name].append(await measure(n))
    return {name: pick(values) for name, values in samples.items()}


async def run_keyed(quick: bool) -> list[Result]:
    """Every keyed-group figure."""
    return [
        *await bench_call_path(quick),
        await bench_guard_key_memory(quick),
        await bench_breaker_key_memory(quick),
        await bench_sweep(quick),
        await bench_refusal(quick),
        *await bench_fleet_keys(quick),
    ]
