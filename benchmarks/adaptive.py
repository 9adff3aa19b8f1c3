"""An adaptive limit against fixed ones and none, on a real HTTP server.

Hypercorn serves :mod:`benchmarks.bounded_app` on 127.0.0.1: ``WORKERS``
workers of ``SERVICE`` seconds each, the rest queued inside the server.
Calls arrive at 3x its capacity (open loop) through a guard with a call
timeout; each guard but the first has a bulkhead line of ``QUEUED`` calls,
beyond which calls are shed. Goodput is replies per second; p99 is the 99th
percentile of how long callers waited for a reply (the line included; a
call that timed out waited its timeout, a shed call waited nothing). The
adaptive limit is compared with no limit, a fixed limit twice too high and
one half too low; and its cost on the ON path, not overloaded, with a fixed
bulkhead's.

On a shared machine the client is the noisy part, so each run of a guard
(a *segment*) is a process of its own against a server of its own, and the
four guards take turns over several rounds: they share the machine's load.
A segment stops making calls at its end and cancels what is left a call
timeout later, whatever happened. Each reply carries the time the server
held it, so the client's own delay (scheduling, parsing: what a busy
machine adds) is measured apart and reported, as is the load average.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import breaky
from benchmarks._harness import ROOT, Result
from breaky._demo.servers import ServerProcess, free_port

if TYPE_CHECKING:
    import httpx

WORKERS = 4
SERVICE = 0.1
CAPACITY = WORKERS / SERVICE  # replies per second
OVERLOAD = 3.0
QUEUED = 2 * WORKERS
TIMEOUT = 2.0
HERE = Path(__file__).resolve().parent
TRACE = HERE / "adaptive_trace.json"
GUARDS = ("no limit", "fixed 2x too high", "fixed half too low", "adaptive")


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
        # The app's module is found beside this file (hypercorn adds the
        # directory of a module path to sys.path), whatever the directory.
        f"{HERE / 'bounded_app'}:app",
    ]
    os.environ["BENCH_WORKERS"] = str(WORKERS)
    os.environ["BENCH_SERVICE"] = str(SERVICE)
    return ServerProcess(argv, port, "bounded server")


def make_guard(name: str) -> breaky.Guard:
    options: dict[str, Any] = {"call_timeout": TIMEOUT, "failure_threshold": 10**9}
    limits: dict[str, int | breaky.Adaptive | None] = {
        "no limit": None,
        "fixed 2x too high": 2 * WORKERS,
        "fixed half too low": WORKERS // 2,
        # As a user would: by default, a probe every 30 s (one per segment).
        "adaptive": breaky.Adaptive(initial=20),
    }
    limit = limits[name]
    if limit is None:
        return breaky.Guard("none", **options)
    return breaky.Guard(name, max_concurrent=limit, max_queued=QUEUED, **options)


# A segment: one guard, in a process of its own.


@attrs.define
class Segment:
    """What one guard's run measured, replies counted once warm."""

    guard: str
    seconds: float
    measured: float = 0.0
    offered: int = 0  # calls made (late ones are skipped, not bunched)
    statuses: dict[str, int] = attrs.Factory(dict)
    latencies: list[float] = attrs.Factory(list)  # as callers saw them
    unanswered: list[float] = attrs.Factory(list)  # waits that timed out
    held: list[float] = attrs.Factory(list)  # the server's part of each
    own: list[float] = attrs.Factory(list)  # the client's: place to answer
    lags: list[float] = attrs.Factory(list)  # the event loop's, every 10 ms
    cpu: float = 0.0  # the client's CPU seconds
    trace: list[tuple[float, int, float]] = attrs.Factory(list)


async def watch_lag(lags: list[float]) -> None:
    """How late a 10 ms sleep wakes: the client's own scheduling delay."""
    while True:
        asked = trio.current_time() + 0.01
        await trio.sleep_until(asked)
        lags.append(trio.current_time() - asked)


async def segment(name: str, port: int, seconds: float) -> Segment:
    """Calls at OVERLOAD x the capacity for ``seconds`` through guard ``name``."""
    import httpx  # noqa: PLC0415 - the parent process needs no client

    result = Segment(name, seconds)
    guard = make_guard(name)
    url = f"http://127.0.0.1:{port}/work"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # No timeout of its own: the guard's call_timeout bounds each call.
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:  # noqa: S113
        await client.get(url)  # warm
        start = trio.current_time()
        warm, end = start + seconds / 4, start + seconds
        result.measured = end - warm
        cpu = time.process_time()

        async def call() -> None:
            made = trio.current_time()
            placed: list[float] = []

            async def get() -> httpx.Response:
                placed.append(trio.current_time())
                return await client.get(url)

            try:
                answer = await guard.run(get)
            except (breaky.CallTimeout, httpx.HTTPError) as exc:
                key = type(exc).__name__
                result.statuses[key] = result.statuses.get(key, 0) + 1
                now = trio.current_time()
                if warm <= now < end:
                    result.unanswered.append(now - made)
                return
            now = trio.current_time()
            key = "shed" if answer is breaky.OFF else str(answer.status_code)
            result.statuses[key] = result.statuses.get(key, 0) + 1
            if answer is breaky.OFF or answer.status_code != 200:
                return
            if name == "adaptive":
                limit = guard.concurrency_limit or 0
                result.trace.append((now - start, limit, now - made))
            if warm <= now < end:
                held = float(answer.headers["x-held"])
                result.latencies.append(now - made)
                result.held.append(held)
                result.own.append(now - placed[0] - held)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_lag, result.lags)
            async with trio.open_nursery() as calls:
                # Whatever is left a call timeout after the end is cancelled.
                calls.cancel_scope.deadline = end + TIMEOUT
                gap = 1 / (OVERLOAD * CAPACITY)
                arrival = start
                while arrival < end:
                    calls.start_soon(call)
                    result.offered += 1
                    # A late client skips arrivals rather than bunching them.
                    arrival = max(arrival + gap, trio.current_time())
                    await trio.sleep_until(arrival)
            nursery.cancel_scope.cancel()
        result.cpu = time.process_time() - cpu
    return result


def segment_main(name: str, port: int, seconds: float) -> None:
    """A segment in this process (the parent runs one per guard and round)."""
    print(json.dumps(attrs.asdict(trio.run(segment, name, port, seconds))))


async def run_segment(name: str, seconds: float) -> Segment:
    """One segment in a child process, against a fresh server."""
    dependency = server()
    await dependency.start()
    try:
        argv = [sys.executable, "-m", "benchmarks.adaptive", "--segment", name]
        argv += ["--port", str(dependency.port), "--seconds", str(seconds)]
        done = await trio.run_process(argv, cwd=ROOT, capture_stdout=True)
    finally:
        await dependency.kill()
    data = json.loads(done.stdout)
    data["trace"] = [tuple(point) for point in data["trace"]]
    return Segment(**data)


# The figures.


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else math.inf


@attrs.frozen
class Figures:
    """One guard's segments, pooled."""

    goodput: float  # replies per second
    p99: float  # seconds callers waited: replies, and timeouts
    median: float
    offered: float  # calls made per second
    own_p99: float  # the client's own part of a reply's latency
    lag_p99: float  # the event loop's lag
    cpu: float  # the client's CPU seconds per second

    @classmethod
    def of(cls, segments: list[Segment]) -> Figures:
        latencies = [x for s in segments for x in s.latencies]
        waits = latencies + [x for s in segments for x in s.unanswered]
        seconds = sum(s.seconds for s in segments)
        return cls(
            goodput=len(latencies) / sum(s.measured for s in segments),
            p99=percentile(waits, 0.99),
            median=statistics.median(latencies) if latencies else math.inf,
            offered=sum(s.offered for s in segments) / seconds,
            own_p99=percentile([x for s in segments for x in s.own], 0.99),
            lag_p99=percentile([x for s in segments for x in s.lags], 0.99),
            cpu=sum(s.cpu for s in segments) / seconds,
        )


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


async def one_checkpoint(i: int = 0) -> int:
    await trio.lowlevel.checkpoint()
    return i


async def on_path_cost(n: int, count: int) -> Result:
    """Seconds of CPU per call, each guard timed in turns, in either order.

    CPU time, not wall time: on a shared machine the time this process
    waits for a CPU says nothing of either guard.
    """
    guards = {
        "fixed": breaky.Guard("fixed", max_concurrent=10, call_timeout=None),
        "adaptive": breaky.Guard(
            "adaptive", max_concurrent=breaky.Adaptive(initial=10), call_timeout=None
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in guards}
    for turn in range(count):
        order = list(guards.items())
        for name, guard in order if turn % 2 else reversed(order):
            gc.collect()
            run = guard.run
            began = time.process_time()
            for i in range(n):
                await run(one_checkpoint, i)
            samples[name].append((time.process_time() - began) / n)
    us = 1e6
    return Result(
        name="adaptive limit, ON path not overloaded, vs a fixed bulkhead",
        unit="us/call",
        breaky=statistics.median(samples["adaptive"]) * us,
        floor=statistics.median(samples["fixed"]) * us,
        floor_name="max_concurrent=10",
        target=1.15,
        note="Adaptive(initial=10), CPU time; instructions: benchmarks/instructions.py",
    )


async def run_adaptive(quick: bool) -> list[Result]:
    """Goodput and p99 at 3x overload, the guards in turns; the ON path's cost."""
    seconds, turns = (4.0, 1) if quick else (40.0, 2)
    segments: dict[str, list[Segment]] = {name: [] for name in GUARDS}
    before = load_average()
    for turn in range(turns):
        for name in GUARDS:
            done = await run_segment(name, seconds)
            segments[name].append(done)
            print(
                f"  turn {turn + 1}, {name}: {done.statuses}, load {load_average()}",
                file=sys.stderr,
            )
    after = load_average()
    first = segments["adaptive"][0]
    TRACE.write_text(
        json.dumps(
            {
                "workers": WORKERS,
                "service": SERVICE,
                "capacity": CAPACITY,
                "overload": OVERLOAD,
                "queued": QUEUED,
                "trace": first.trace,
            }
        )
    )
    figures = {name: Figures.of(runs) for name, runs in segments.items()}
    ms = 1000
    for name, f in figures.items():
        print(
            f"  {name:20s} goodput {f.goodput:6.1f}/s  p99 {f.p99 * ms:6.0f} ms  "
            f"median {f.median * ms:6.0f} ms  offered {f.offered:5.0f}/s  "
            f"client: own p99 {f.own_p99 * ms:5.0f} ms, loop lag p99 "
            f"{f.lag_p99 * ms:4.0f} ms, CPU {f.cpu:4.0%}",
            file=sys.stderr,
        )
    fixed = ("fixed 2x too high", "fixed half too low")
    best_goodput = max(fixed, key=lambda name: figures[name].goodput)
    best_p99 = min(fixed, key=lambda name: figures[name].p99)
    adaptive = figures["adaptive"]
    note = (
        f"{WORKERS} workers of {SERVICE * ms:g} ms, arrivals at {OVERLOAD:g}x, "
        f"{turns} turn(s) of {seconds:g} s; load average {before} before, "
        f"{after} after"
    )
    n, count = (2_000, 3) if quick else (20_000, 21)
    return [
        Result(
            name="adaptive goodput at 3x overload vs the best fixed limit's",
            unit="replies/s",
            breaky=adaptive.goodput,
            floor=figures[best_goodput].goodput,
            floor_name=best_goodput,
            target=0.9,
            sense="min",
            note=note,
        ),
        Result(
            name="adaptive p99 at 3x overload vs the best fixed limit's",
            unit="ms",
            breaky=adaptive.p99 * ms,
            floor=figures[best_p99].p99 * ms,
            floor_name=best_p99,
            target=1.5,
        ),
        Result(
            name="adaptive p99 at 3x overload vs no limit's",
            unit="ms",
            breaky=adaptive.p99 * ms,
            floor=figures["no limit"].p99 * ms,
            floor_name="no limit",
            target=0.3,
        ),
        Result(
            name="client's own delay p99 (adaptive run) vs the service time",
            unit="ms",
            breaky=adaptive.own_p99 * ms,
            floor=SERVICE * ms,
            floor_name="SERVICE",
            note="reported: what the machine's load added to each reply",
        ),
        await on_path_cost(n, count),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--segment", choices=GUARDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.segment:
        segment_main(args.segment, args.port, args.seconds)
        return 0
    from benchmarks._harness import report  # noqa: PLC0415

    return report(trio.run(run_adaptive, args.quick), enforce=not args.quick)


if __name__ == "__main__":  # python -m benchmarks.adaptive [--quick]
    sys.exit(main())
