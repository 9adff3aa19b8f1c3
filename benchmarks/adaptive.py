"""An adaptive limit against fixed ones and none, on a real HTTP server.

Hypercorn serves :mod:`benchmarks.bounded_app` on 127.0.0.1: ``WORKERS``
workers of ``SERVICE`` seconds each, the rest queued inside the server.
Calls arrive at 3x its capacity (open loop) through a guard with a call
timeout; each guard but the first has a bulkhead line of ``QUEUED`` calls,
beyond which calls are shed. Goodput is replies per second; p99 is the 99th
percentile of the replies' latency as their callers saw it (the line
included). The adaptive limit is compared with no limit, a fixed limit
twice too high and one half too low; and its cost on the ON path, not
overloaded, with a fixed bulkhead's.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

import breaky
from benchmarks._harness import Result, per_op, rounds
from breaky._demo.servers import ServerProcess, free_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WORKERS = 4
SERVICE = 0.05
CAPACITY = WORKERS / SERVICE  # replies per second
OVERLOAD = 3.0
QUEUED = 2 * WORKERS
TIMEOUT = 2.0
HERE = Path(__file__).resolve().parent
TRACE = HERE / "adaptive_trace.json"


def server() -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "hypercorn",
        "--workers",
        "0",
        "--backlog",
        "2048",
        "--bind",
        f"127.0.0.1:{port}",
        "bounded_app:app",
    ]
    os.environ["BENCH_WORKERS"] = str(WORKERS)
    os.environ["BENCH_SERVICE"] = str(SERVICE)
    return ServerProcess(argv, port, "bounded server", cwd=HERE)


async def overload(
    client: httpx.AsyncClient,
    url: str,
    guard: breaky.Guard,
    seconds: float,
    trace: list[tuple[float, float, float | None]] | None = None,
) -> tuple[float, float, float]:
    """Goodput (replies/s), p99 and median latency (s) of the replies."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = trio.current_time()
    warm = start + seconds / 4  # measure once the limit has had time to learn
    end = start + seconds

    async def call() -> None:
        made = trio.current_time()
        try:
            answer = await guard.run(client.get, url)
        except (breaky.CallTimeout, httpx.HTTPError):
            return
        now = trio.current_time()
        if answer is breaky.OFF:
            return
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if answer.status_code != httpx.codes.OK:
            return
        if warm <= now < end:
            latencies.append(now - made)
        if trace is not None:
            trace.append((now - start, float(guard.concurrency_limit or 0), now - made))

    async with trio.open_nursery() as nursery:
        gap = 1 / (OVERLOAD * CAPACITY)
        arrival = start
        while arrival < end:
            nursery.start_soon(call)
            arrival += gap
            await trio.sleep_until(arrival)
    print(
        f"  {guard.name}: {statuses} in {trio.current_time() - start:.1f} s",
        file=sys.stderr,
    )
    latencies.sort()
    measured = end - warm
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else math.inf
    median = statistics.median(latencies) if latencies else math.inf
    return len(latencies) / measured, p99, median


def guards() -> dict[str, breaky.Guard]:
    options: dict[str, Any] = {"call_timeout": TIMEOUT, "failure_threshold": 10**9}
    return {
        "no limit": breaky.Guard("none", **options),
        "fixed 2x too high": breaky.Guard(
            "high", max_concurrent=2 * WORKERS, max_queued=QUEUED, **options
        ),
        "fixed half too low": breaky.Guard(
            "low", max_concurrent=WORKERS // 2, max_queued=QUEUED, **options
        ),
        "adaptive": breaky.Guard(
            "adaptive",
            max_concurrent=breaky.Adaptive(initial=20, probe_interval=10),
            max_queued=QUEUED,
            **options,
        ),
    }


async def one_checkpoint(i: int = 0) -> int:
    await trio.lowlevel.checkpoint()
    return i


async def on_path_cost(n: int, count: int) -> Result:
    fixed = breaky.Guard("fixed", max_concurrent=1000, call_timeout=None)
    adaptive = breaky.Guard(
        "adaptive",
        max_concurrent=breaky.Adaptive(initial=1000, maximum=1000),
        call_timeout=None,
    )

    def timing(
        op: Callable[[int], Awaitable[object]],
    ) -> Callable[[int], Awaitable[float]]:
        async def measure(m: int) -> float:
            return await per_op(m, op)

        return measure

    medians = await rounds(
        n,
        count,
        {
            "fixed": timing(lambda i: fixed.run(one_checkpoint, i)),
            "adaptive": timing(lambda i: adaptive.run(one_checkpoint, i)),
        },
    )
    us = 1e6
    return Result(
        name="adaptive limit, ON path not overloaded, vs a fixed bulkhead",
        unit="us/call",
        breaky=medians["adaptive"] * us,
        floor=medians["fixed"] * us,
        floor_name="max_concurrent=1000",
        target=1.15,
    )


async def run_adaptive(quick: bool) -> list[Result]:
    """Goodput and p99 at 3x overload; the ON path's cost."""
    seconds = 4.0 if quick else 40.0
    figures: dict[str, tuple[float, float, float]] = {}
    trace: list[tuple[float, float, float | None]] = []
    dependency = server()
    await dependency.start()
    try:
        url = f"http://127.0.0.1:{dependency.port}/work"
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        # No timeout of its own: the guards' call_timeout bounds each call.
        async with httpx.AsyncClient(limits=limits, timeout=None) as client:  # noqa: S113
            await client.get(url)  # warm
            for name, guard in guards().items():
                figures[name] = await overload(
                    client, url, guard, seconds, trace if name == "adaptive" else None
                )
                await trio.sleep(TIMEOUT)  # what the server still holds drains
    finally:
        await dependency.kill()
    TRACE.write_text(
        json.dumps(
            {
                "workers": WORKERS,
                "service": SERVICE,
                "capacity": CAPACITY,
                "overload": OVERLOAD,
                "trace": trace,
            }
        )
    )
    for name, (goodput, p99, median) in figures.items():
        print(
            f"  {name:20s} goodput {goodput:7.1f}/s  p99 {p99 * 1000:7.1f} ms  "
            f"median {median * 1000:7.1f} ms",
            file=sys.stderr,
        )
    fixed = ("fixed 2x too high", "fixed half too low")
    best_goodput = max(fixed, key=lambda name: figures[name][0])
    best_p99 = min(fixed, key=lambda name: figures[name][1])
    adaptive = figures["adaptive"]
    ms = 1000
    note = f"{WORKERS} workers of {SERVICE * ms:g} ms, arrivals at {OVERLOAD:g}x"
    n, count = (2_000, 3) if quick else (50_000, 9)
    return [
        Result(
            name="adaptive goodput at 3x overload vs the best fixed limit's",
            unit="replies/s",
            breaky=adaptive[0],
            floor=figures[best_goodput][0],
            floor_name=best_goodput,
            target=0.9,
            sense="min",
            note=note,
        ),
        Result(
            name="adaptive p99 at 3x overload vs the best fixed limit's",
            unit="ms",
            breaky=adaptive[1] * ms,
            floor=figures[best_p99][1] * ms,
            floor_name=best_p99,
            target=1.5,
            note=note,
        ),
        Result(
            name="adaptive p99 at 3x overload vs no limit's",
            unit="ms",
            breaky=adaptive[1] * ms,
            floor=figures["no limit"][1] * ms,
            floor_name="no limit",
            target=0.3,
            note=note,
        ),
        await on_path_cost(n, count),
    ]


if __name__ == "__main__":  # a run of its own: python -m benchmarks.adaptive
    from benchmarks._harness import report

    started = time.perf_counter()
    sys.exit(report(trio.run(run_adaptive, "--quick" in sys.argv), enforce=True))
