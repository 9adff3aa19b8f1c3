"""breaky.Adaptive in a simulation on Trio's mock clock: the explanation's figures.

    python benchmarks/simulate_adaptive.py [--seed N] [--only NAME ...]

The dependency is a number of workers taking lognormal times (mean
``SERVICE``, spread 0.3); requests beyond its workers queue inside it. The
callers go through a guard with ``max_concurrent=breaky.Adaptive(...)``;
each scenario prints the dependency's throughput against its capacity and
its p99 latency against its unloaded mean latency. A *loaded client* is one
whose own work waits for a CPU that other processes hold part of the time,
in bursts (a shared machine): its latency is not the dependency's.

Everything runs on the mock clock: the figures are the same on any machine
for the same seed, and a run takes seconds of CPU, not of waiting.
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

    def throughput(self, start: float, end: float) -> float:
        return sum(1 for t, _ in self.answers if start <= t < end) / (end - start)

    def p99(self, start: float, end: float) -> float:
        return percentile([x for t, x in self.answers if start <= t < end], 0.99)


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
class Figures:
    name: str
    throughput: float  # of the dependency's capacity
    p99: float  # the dependency's p99 latency over its unloaded mean
    caller_p99: float  # the callers' p99 latency (line included) over it
    limit: float  # the median limit
    note: str = ""


async def watch(read: Callable[[], int | None], into: list[tuple[float, int]]) -> None:
    while True:
        into.append((trio.current_time(), read() or 0))
        await trio.sleep(0.1)


def median_between(trace: list[tuple[float, int]], start: float, end: float) -> float:
    return statistics.median(v for t, v in trace if start <= t < end)


async def closed_loop(
    call: Callable[[], Awaitable[object]],
    callers: int,
    until: float,
    latencies: list[tuple[float, float]],
) -> None:
    """``callers`` tasks calling back to back until ``until`` (shed: a pause)."""

    async def caller() -> None:
        while trio.current_time() < until:
            made = trio.current_time()
            if await call() is breaky.OFF:
                await trio.sleep(SERVICE)
            else:
                latencies.append((trio.current_time(), trio.current_time() - made))

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)


def guarded(guard: breaky.Guard, dep: Workers, client: Client) -> Callable[[], Any]:
    async def request() -> None:
        await client.work()  # send
        await dep.request()
        await client.work()  # read the answer

    return lambda: guard.run(request)


def scenario(**options: Any) -> list[Figures]:
    """One scenario, on a mock clock of its own (its time starts at 0)."""
    return trio.run(
        functools.partial(run_scenario, **options),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def run_scenario(  # noqa: PLR0913 - a scenario's knobs, all keywords
    *,
    name: str,
    seed: int,
    workers: int,
    callers: int,
    seconds: float,
    busy: float = 0.0,
    change: Callable[[Workers], Awaitable[None]] | None = None,
    windows: tuple[tuple[float, float, float], ...] = (),
    limit: int | breaky.Adaptive | None = None,
) -> list[Figures]:
    random.seed(seed)  # the limits' jitter
    rng = random.Random(seed)  # noqa: S311 - a simulation
    dep = Workers(workers, rng)
    client = Client(rng, busy=busy)
    options: dict[str, Any] = {"call_timeout": None}
    if limit is None:
        limit = breaky.Adaptive(initial=2 * workers)
    guard = breaky.Guard(name, max_concurrent=limit, **options)
    trace: list[tuple[float, int]] = []
    latencies: list[tuple[float, float]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, lambda: guard.concurrency_limit, trace)
        nursery.start_soon(client.others)
        if change is not None:
            nursery.start_soon(change, dep)
        await closed_loop(guarded(guard, dep, client), callers, seconds, latencies)
        nursery.cancel_scope.cancel()
    windows = windows or ((seconds / 6, seconds, workers / SERVICE),)
    figures: list[Figures] = []
    for start, end, capacity in windows:
        figures.append(
            Figures(
                name=name if len(windows) == 1 else f"{name}, {start:g}-{end:g} s",
                throughput=dep.throughput(start, end) / capacity,
                p99=dep.p99(start, end) / SERVICE,
                caller_p99=percentile(
                    [x for t, x in latencies if start <= t < end], 0.99
                )
                / SERVICE,
                limit=median_between(trace, start, end),
            )
        )
    return figures


def overload(**options: Any) -> Figures:
    """One open-loop run, on a mock clock of its own."""
    return trio.run(
        functools.partial(run_overload, **options),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def run_overload(  # noqa: PLR0913 - a scenario's knobs, all keywords
    *,
    name: str,
    seed: int,
    workers: int,
    limit: int | breaky.Adaptive | None,
    busy: float = 0.0,
    seconds: float = 40.0,
    times: float = 3.0,
    call_timeout: float = 2.0,
) -> Figures:
    """Arrivals at ``times`` the capacity, as the real-HTTP benchmark makes them."""
    random.seed(seed)  # the limits' jitter
    rng = random.Random(seed)  # noqa: S311 - a simulation
    dep = Workers(workers, rng)
    client = Client(rng, busy=busy)
    capacity = workers / SERVICE
    guard = breaky.Guard(
        name,
        max_concurrent=limit,
        max_queued=None if limit is None else 2 * workers,
        call_timeout=call_timeout,
        failure_threshold=10**9,
    )
    request = guarded(guard, dep, client)
    trace: list[tuple[float, int]] = []
    latencies: list[tuple[float, float]] = []

    async def call() -> None:
        made = trio.current_time()
        await client.work(client.cost / 10)  # the arrival's own work
        try:
            answer = await request()
        except breaky.CallTimeout:
            return
        if answer is not breaky.OFF:
            latencies.append((trio.current_time(), trio.current_time() - made))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, lambda: guard.concurrency_limit, trace)
        nursery.start_soon(client.others)
        async with trio.open_nursery() as arrivals:
            gap = 1 / (times * capacity)
            arrival = 0.0
            while arrival < seconds:
                arrivals.start_soon(call)
                arrival += gap
                await trio.sleep_until(arrival)
        nursery.cancel_scope.cancel()
    warm = seconds / 4
    answered = [x for t, x in latencies if warm <= t < seconds]
    return Figures(
        name=name,
        throughput=len(answered) / (seconds - warm) / capacity,
        p99=dep.p99(warm, seconds) / SERVICE,
        caller_p99=percentile(answered, 0.99) / SERVICE,
        limit=median_between(trace, warm, seconds) if limit is not None else 0,
    )


def table(rows: list[Figures]) -> str:
    lines = [
        f"{'scenario':46} {'busy':>6} {'p99':>6} {'caller':>7} {'limit':>6}",
        f"{'':46} {'(x cap)':>6} {'(x s)':>6} {'p99':>7} {'median':>6}",
    ]
    lines.extend(
        f"{r.name:46} {r.throughput:6.2f} {r.p99:6.1f} {r.caller_p99:7.1f} "
        f"{r.limit:6.0f}"
        for r in rows
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args(argv)
    seed = args.seed

    def run() -> list[Figures]:
        rows: list[Figures] = []
        rows += scenario(
            name="8 workers, 100 callers", seed=seed, workers=8, callers=100, seconds=30
        )

        async def halve(dep: Workers) -> None:
            await trio.sleep(20)
            dep.resize(4)
            await trio.sleep(20)
            dep.resize(8)

        rows += scenario(
            name="8 workers halved at 20 s, back at 40 s",
            seed=seed,
            workers=8,
            callers=100,
            seconds=60,
            change=halve,
            windows=(
                (10, 20, 8 / SERVICE),
                (20, 30, 4 / SERVICE),
                (30, 40, 4 / SERVICE),
                (40, 50, 8 / SERVICE),
                (50, 60, 8 / SERVICE),
            ),
        )

        async def slower(dep: Workers) -> None:
            await trio.sleep(20)
            dep.service *= 2

        rows += scenario(
            name="8 workers, twice slower per call at 20 s",
            seed=seed,
            workers=8,
            callers=100,
            seconds=40,
            change=slower,
            windows=((10, 20, 8 / SERVICE), (25, 40, 4 / SERVICE)),
        )
        rows += scenario(
            name="200 workers, 1,000 callers",
            seed=seed,
            workers=200,
            callers=1000,
            seconds=20,
        )
        for busy in (0.5, 0.8):
            rows += scenario(
                name=f"8 workers, 100 callers, client CPU {busy:.0%} taken",
                seed=seed,
                workers=8,
                callers=100,
                seconds=30,
                busy=busy,
            )
            rows += scenario(
                name="  the same, fixed limit 16 (2x)",
                seed=seed,
                workers=8,
                callers=100,
                seconds=30,
                busy=busy,
                limit=16,
            )
        for busy in (0.0, 0.5, 0.8):
            for label, limit in (
                ("no limit", None),
                ("fixed 8 (2x)", 8),
                ("fixed 2 (half)", 2),
                ("adaptive", breaky.Adaptive(initial=20)),
            ):
                rows.append(
                    overload(
                        name=f"4 workers, 3x arrivals, CPU {busy:.0%}: {label}",
                        seed=seed,
                        workers=4,
                        limit=limit,
                        busy=busy,
                    )
                )
        return rows

    rows = run()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
