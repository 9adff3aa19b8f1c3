"""What every benchmark shares: timing in rounds, results, the report, children.

A benchmark times breaky and its floor in turns (:func:`rounds` over
:func:`per_op` or :func:`crowd`) and returns :class:`Result`\\ s; ``run.py``
prints them with :func:`report` and writes them with :func:`write_json`.
Figures that need a process of their own (RSS) come from :func:`run_child`.
Nothing here imports a benchmark, so any benchmark module can import it.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import breaky

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Result:
    """One benchmark's medians, ratio and target."""

    name: str
    unit: str
    breaky: float
    floor: float
    floor_name: str
    # "max": breaky / floor must be <= target; "min": >= target; None: report.
    target: float | None = None
    sense: str = "max"
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.breaky / self.floor

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.sense == "max":
            return self.ratio <= self.target
        return self.ratio >= self.target


# Timing.


async def per_op(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Seconds per ``await op(i)``, over ``n`` in a row."""
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    return (time.perf_counter() - start) / n


async def crowd(
    callers: int, per_caller: int, call: Callable[[int], Awaitable[object]]
) -> float:
    """Calls per second when ``callers`` tasks each make ``per_caller`` calls."""

    async def caller() -> None:
        for i in range(per_caller):
            await call(i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return callers * per_caller / (time.perf_counter() - start)


async def rounds(
    n: int, count: int, pairs: dict[str, Callable[[int], Awaitable[float]]]
) -> dict[str, float]:
    """Run each measurement ``count`` times, in turns; return the medians."""
    samples: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(count):
        for name, measure in pairs.items():
            gc.collect()
            samples[name].append(await measure(n))
    return {name: statistics.median(values) for name, values in samples.items()}


def rss_bytes() -> int:
    """The resident set size of this process, from /proc."""
    with Path("/proc/self/statm").open() as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096


def run_child(module: str, *args: str) -> list[str]:
    """Run ``python -m module args`` from the source tree; its output's words."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()


# Resources and the hand-written floor that several benchmarks use.


async def echo(inbox: breaky.Inbox[Any, Any], *, task_status: Any) -> None:
    task_status.started()
    async for request in inbox:
        request.reply(request.message)


@attrs.define
class FloorRequest:
    """The hand-written request: a message, an Event, and a reply slot."""

    message: Any
    done: trio.Event = attrs.Factory(trio.Event)
    reply: Any = None


async def floor_server(
    receive: trio.MemoryReceiveChannel[FloorRequest],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    async for request in receive:
        request.reply = request.message
        request.done.set()


async def floor_call(send: trio.MemorySendChannel[FloorRequest], message: Any) -> Any:
    request = FloorRequest(message)
    await send.send(request)
    await request.done.wait()
    return request.reply


# The report.


def report(results: list[Result], *, enforce: bool) -> int:
    """Print the table; return 1 if an enforced target was missed."""
    print(
        f"{'benchmark':42} {'breaky':>10} {'floor':>10} {'unit':8}"
        f" {'ratio':>6} {'target':>8}"
    )
    missed: list[Result] = []
    for r in results:
        if r.target is None:
            target = "report"
        else:
            target = f"{'<=' if r.sense == 'max' else '>='} {r.target:g}"
        verdict = {True: "ok", False: "MISSED", None: ""}[r.met]
        print(
            f"{r.name:42} {r.breaky:10.2f} {r.floor:10.2f} {r.unit:8}"
            f" {r.ratio:6.2f} {target:>8} {verdict}"
        )
        if r.note:
            print(f"    ({r.note})")
        if r.met is False:
            missed.append(r)
    for r in missed:
        print(
            f"missed: {r.name}: ratio {r.ratio:.2f} against a target of "
            f"{'at most' if r.sense == 'max' else 'at least'} {r.target:g} "
            f"(floor: {r.floor_name})"
        )
    if missed and not enforce:
        print("(--quick: targets are not enforced)")
    return 1 if missed and enforce else 0


def write_json(results: list[Result], path: Path) -> None:
    """Every result with its ratio and verdict, for CI to keep."""
    path.write_text(
        json.dumps(
            [{**attrs.asdict(r), "ratio": r.ratio, "met": r.met} for r in results],
            indent=2,
        )
    )
