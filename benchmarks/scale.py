"""Scale: start N breakers, against N hand-written restarting watchers.

Each side runs in a fresh interpreter (``python -m benchmarks.scale SIDE N``
prints the seconds it took and the bytes its RSS grew), so that each RSS is
its own.
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from typing import Any

import trio

import breaky
from benchmarks._harness import (
    FloorRequest,
    Result,
    echo,
    floor_server,
    rss_bytes,
    run_child,
)


async def breaky_side(n: int) -> tuple[float, int]:
    # Cancelled from outside rather than closed: this measures the starts,
    # not stopping 10,000 breakers one by one.
    took, grown = math.nan, 0
    with trio.CancelScope() as scope:
        async with breaky.open_supervisor() as sup:
            gc.collect()
            before = rss_bytes()
            start = time.perf_counter()
            for i in range(n):
                await sup.start_circuit_breaker(f"b{i}", echo)
            took = time.perf_counter() - start
            gc.collect()
            grown = rss_bytes() - before
            scope.cancel()
    return took, grown


async def watcher(
    receive: trio.MemoryReceiveChannel[FloorRequest],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Restart the resource whenever it fails: the hand-written supervisor."""
    first = True
    while True:
        try:
            async with trio.open_nursery() as inner:
                await inner.start(floor_server, receive)
                if first:
                    first = False
                    task_status.started()
        except Exception:  # noqa: BLE001, PERF203, S110 - restarted, whatever it was
            pass


async def floor_side(n: int) -> tuple[float, int]:
    async with trio.open_nursery() as nursery:
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        for _ in range(n):
            _, receive = trio.open_memory_channel[FloorRequest](math.inf)
            await nursery.start(watcher, receive)
        took = time.perf_counter() - start
        gc.collect()
        grown = rss_bytes() - before
        nursery.cancel_scope.cancel()
    return took, grown


def bench_scale(n: int, count: int) -> list[Result]:
    samples: dict[str, list[tuple[float, float]]] = {"breaky": [], "floor": []}
    for _ in range(count):
        for side, values in samples.items():
            seconds, grown_bytes = run_child("benchmarks.scale", side, str(n))
            values.append((float(seconds), float(grown_bytes)))
    took = {s: statistics.median(v[0] for v in vs) for s, vs in samples.items()}
    grown = {s: statistics.median(v[1] for v in vs) for s, vs in samples.items()}
    return [
        Result(
            f"scale: start {n:,} breakers, time each",
            "us",
            took["breaky"] / n * 1e6,
            took["floor"] / n * 1e6,
            "resource task + channel + restarting watcher",
            target=2.0,
        ),
        Result(
            f"scale: start {n:,} breakers, RSS each",
            "KiB",
            grown["breaky"] / n / 1024,
            grown["floor"] / n / 1024,
            "resource task + channel + restarting watcher",
            target=2.0,
        ),
    ]


if __name__ == "__main__":
    side = {"breaky": breaky_side, "floor": floor_side}[sys.argv[1]]
    took, grown = trio.run(side, int(sys.argv[2]))
    print(took, grown)
