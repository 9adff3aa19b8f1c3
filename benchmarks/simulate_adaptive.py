"""breaky.Adaptive in a simulation on Trio's mock clock: the explanation's figures.

    python benchmarks/simulate_adaptive.py [--seed N]

The dependency is a number of workers taking lognormal times (mean
``SERVICE``, spread 0.3); requests beyond its workers queue inside it. The
callers go through a guard with ``max_concurrent=breaky.Adaptive(...)``.
Each row gives the dependency's throughput over its capacity, its p99
latency over its unloaded mean latency, and the limit's median, over the
window named (the first sixth of a run is left out: the limit learns).

Closed loop: callers call back to back (the line in front of the limit is
unbounded, so the callers' own latency is the line's). Open loop: calls
arrive at 3x the capacity, as in the real-HTTP benchmark (a line of
``2 * workers``, a 2 s call timeout); there the callers' p99 counts too.

A *loaded client* is one whose own work (0.5 ms a call, before and after)
waits for a CPU that other processes hold part of the time, in bursts of
20 ms on average: a shared machine. Its delays are not the dependency's,
and a latency-based limit cannot tell them apart.

Everything runs on the mock clock: the figures are the same on any machine
for the same seed, and a run takes a minute or two of CPU, not of waiting.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import breaky

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SERVICE = 0.050  # the dependency's mean time per request, unloaded


@attrs.define(eq=False)
class Workers:
    """``workers`` requests served at once, lognormal times; the rest queue."""

    workers: int
    rng: random.Random
    service: float = SERVICE
    spread: float = 0.3
    # (when it was answered, its latency inside the dependency).
    answers: list[tuple[float, float]] = attrs.Factory(list)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.workers)

    def resize(self, workers: int) -> None:
        self.workers = self._limiter.total_tokens = workers

    async def request(self) -> None:
        arrived = trio.current_time()
        async with self._limiter:
            sigma = math.sqrt(math.log(1 + self.spread**2))
            await trio.sleep(
                self.service * math.exp(self.rng.gauss(-(sigma**2) / 2, sigma))
            )
        now = trio.current_time()
        self.answers.append((now, now - arrived))

    def between(self, start: float, end: float) -> list[float]:
        return [x for t, x in self.answers if start <= t < end]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[int(q * (len(values) - 1))] if values else math.inf


@attrs.define(eq=False)
class Client:
    """A client process's CPU: ``cost`` seconds of it per call, before and after.

    Other processes hold it ``busy`` of the time, in bursts of ``burst``
    seconds on average; a call's own work waits for it, in order.
    """

    rng: random.Random
    busy: float = 0.0
    burst: float = 0.020
    cost: float = 0.0005
    _cpu: trio.Lock = attrs.Factory(trio.Lock)

    async def work(self, cost: float | None = None) -> None:
        if not self.busy:
            return  # an idle client: its own work takes no time
        async with self._cpu:
            await trio.sleep(self.cost if cost is None else cost)

    async def others(self) -> None:
        """The other processes: hold the CPU ``busy`` of the time (cancel to stop)."""
        if not self.busy:
            return
        free = self.burst * (1 - self.busy) / self.busy
        while True:
            await trio.sleep(self.rng.expovariate(1 / free))
            async with self._cpu:
                await trio.sleep(self.rng.expovariate(1 / self.burst))


@attrs.frozen
class Window:
    """A part of a run, and the dependency's capacity then."""

    start: float
    end: float
    workers: int
    service: float = SERVICE


@attrs.frozen
class Row:
    name: str
    throughput: float  # of the dependency's capacity
    p99: float  # the dependency's p99 latency over its unloaded mean
    caller_p99: float  # the callers' (line included) over it; nan: closed loop
    limit: float  # the median limit


async def watch(read: Callable[[], int | None], into: list[tuple[float, int]]) -> None:
    while True:
        into.append((trio.current_time(), read() or 0))
        await trio.sleep(0.1)


def row(
    name: str,
    window: Window,
    dep: Workers,
    trace: list[tuple[float, int]],
    callers: list[tuple[float, float]] | None,
) -> Row:
    start, end = window.start, window.end
    capacity = window.workers / window.service
    limits = [v for t, v in trace if start <= t < end]
    caller_p99 = math.nan
    if callers is not None:
        waits = [x for t, x in callers if start <= t < end]
        caller_p99 = percentile(waits, 0.99) / window.service
    return Row(
        name=name,
        throughput=len(dep.between(start, end)) / (end - start) / capacity,
        p99=percentile(dep.between(start, end), 0.99) / window.service,
        caller_p99=caller_p99,
        limit=statistics.median(limits) if any(limits) else math.nan,
    )


def guarded(guard: breaky.Guard, dep: Workers, client: Client) -> Callable[[], Any]:
    async def request() -> None:
        await client.work()  # send
        await dep.request()
        await client.work()  # read the answer

    return lambda: guard.run(request)


def on_mock_clock(fn: Callable[..., Awaitable[list[Row]]], **options: Any) -> list[Row]:
    """A run on a mock clock of its own (its time starts at 0)."""
    return trio.run(
        functools.partial(fn, **options),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def closed_loop(  # noqa: PLR0913 - a scenario's knobs, all keywords
    *,
    name: str,
    seed: int,
    workers: int,
    callers: int,
    seconds: float,
    busy: float = 0.0,
    change: Callable[[Workers], Awaitable[None]] | None = None,
    windows: tuple[Window, ...] = (),
    limit: int | breaky.Adaptive | None = None,
) -> list[Row]:
    """``callers`` tasks calling back to back for ``seconds``."""
    random.seed(seed)  # the limits' jitter
    rng = random.Random(seed)  # noqa: S311 - a simulation
    dep = Workers(workers, rng)
    client = Client(rng, busy=busy)
    if limit is None:
        limit = breaky.Adaptive(initial=2 * workers)
    guard = breaky.Guard("dependency", max_concurrent=limit, call_timeout=None)
    call = guarded(guard, dep, client)
    trace: list[tuple[float, int]] = []

    async def caller() -> None:
        while trio.current_time() < seconds:
            await call()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, lambda: guard.concurrency_limit, trace)
        nursery.start_soon(client.others)
        if change is not None:
            nursery.start_soon(change, dep)
        async with trio.open_nursery() as calls:
            for _ in range(callers):
                calls.start_soon(caller)
        nursery.cancel_scope.cancel()
    windows = windows or (Window(seconds / 6, seconds, workers),)
    return [
        row(
            name if len(windows) == 1 else f"{name}: {w.start:g}-{w.end:g} s",
            w,
            dep,
            trace,
            None,
        )
        for w in windows
    ]


async def open_loop(  # noqa: PLR0913 - a scenario's knobs, all keywords
    *,
    name: str,
    seed: int,
    workers: int,
    service: float,
    limit: int | breaky.Adaptive | None,
    busy: float = 0.0,
    seconds: float = 40.0,
) -> list[Row]:
    """Arrivals at 3x the capacity for ``seconds``, as the benchmark makes them."""
    random.seed(seed)  # the limits' jitter
    rng = random.Random(seed)  # noqa: S311 - a simulation
    dep = Workers(workers, rng, service)
    client = Client(rng, busy=busy)
    guard = breaky.Guard(
        "dependency",
        max_concurrent=limit,
        max_queued=None if limit is None else 2 * workers,
        call_timeout=2.0,
        failure_threshold=10**9,
    )
    request = guarded(guard, dep, client)
    trace: list[tuple[float, int]] = []
    waits: list[tuple[float, float]] = []

    async def call() -> None:
        made = trio.current_time()
        await client.work(client.cost / 10)  # the arrival's own work
        try:
            answer = await request()
        except breaky.CallTimeout:
            answer = None  # it waited its timeout
        if answer is not breaky.OFF:
            waits.append((trio.current_time(), trio.current_time() - made))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, lambda: guard.concurrency_limit, trace)
        nursery.start_soon(client.others)
        async with trio.open_nursery() as arrivals:
            gap = service / workers / 3
            arrival = 0.0
            while arrival < seconds:
                arrivals.start_soon(call)
                arrival += gap
                await trio.sleep_until(arrival)
        nursery.cancel_scope.cancel()
    return [
        row(name, Window(seconds / 4, seconds, workers, service), dep, trace, waits)
    ]


def rows(seed: int) -> list[Row]:
    """Every scenario of the explanation, in order."""
    table = on_mock_clock(
        closed_loop,
        name="8 workers, 100 callers",
        seed=seed,
        workers=8,
        callers=100,
        seconds=30,
    )

    async def halve(dep: Workers) -> None:
        await trio.sleep(20)
        dep.resize(4)
        await trio.sleep(20)
        dep.resize(8)

    table += on_mock_clock(
        closed_loop,
        name="8 workers, 4 from 20 s, 8 from 40 s",
        seed=seed,
        workers=8,
        callers=100,
        seconds=60,
        change=halve,
        windows=(
            Window(10, 20, 8),
            Window(20, 30, 4),
            Window(30, 40, 4),
            Window(40, 50, 8),
            Window(50, 60, 8),
        ),
    )

    async def slower(dep: Workers) -> None:
        await trio.sleep(20)
        dep.service *= 2

    table += on_mock_clock(
        closed_loop,
        name="8 workers, twice slower from 20 s",
        seed=seed,
        workers=8,
        callers=100,
        seconds=40,
        change=slower,
        windows=(Window(10, 20, 8), Window(25, 40, 8, 2 * SERVICE)),
    )
    table += on_mock_clock(
        closed_loop,
        name="200 workers, 1,000 callers",
        seed=seed,
        workers=200,
        callers=1000,
        seconds=20,
    )
    for busy in (0.5, 0.8):
        for label, limit in (("Adaptive", None), ("fixed 16", 16)):
            table += on_mock_clock(
                closed_loop,
                name=f"8 workers, 100 callers, client CPU {busy:.0%} taken, {label}",
                seed=seed,
                workers=8,
                callers=100,
                seconds=30,
                busy=busy,
                limit=limit,
            )
    for busy in (0.0, 0.5):
        for label, open_limit in (
            ("no limit", None),
            ("fixed 8", 8),
            ("fixed 2", 2),
            ("Adaptive", breaky.Adaptive(initial=20, probe_interval=10)),
        ):
            client = f", client CPU {busy:.0%} taken" if busy else ""
            table += on_mock_clock(
                open_loop,
                name=f"3x arrivals, 4 workers of 100 ms{client}, {label}",
                seed=seed,
                workers=4,
                service=0.1,
                limit=open_limit,
                busy=busy,
            )
    return table


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        (
            "| Scenario | Throughput (x capacity) | p99 (x unloaded) "
            "| Callers' p99 (x unloaded) | Limit (median) |"
        ),
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        callers = "" if math.isnan(r.caller_p99) else f"{r.caller_p99:.1f}"
        limit = "" if math.isnan(r.limit) else f"{r.limit:g}"
        lines.append(
            f"| {r.name} | {r.throughput:.2f} | {r.p99:.1f} | {callers} | {limit} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args(argv)
    print(table(rows(args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
