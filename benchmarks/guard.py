"""Guards against a bare await and against the Python peers, in one run.

The peers (aiobreaker, purgatory) run under Trio as they are: on the closed
(ON) path they only await. Each figure is the time per call of a coroutine
that awaits one checkpoint; a breaker's overhead is its time minus the bare
await's, measured in turns in the same rounds.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import TYPE_CHECKING

import trio

import breaky
from benchmarks._harness import Result, per_op, rounds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def one_checkpoint(i: int = 0) -> int:
    await trio.lowlevel.checkpoint()
    return i


def _peers() -> dict[str, Callable[[int], Awaitable[object]]]:
    """The peers' closed-circuit calls of ``one_checkpoint``."""
    import aiobreaker  # noqa: PLC0415 - benchmark-only dependencies
    import purgatory  # noqa: PLC0415

    aio = aiobreaker.CircuitBreaker(
        fail_max=5, timeout_duration=dt.timedelta(seconds=30)
    )
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

    @factory("bench")
    async def purgatory_call(i: int) -> int:
        return await one_checkpoint(i)

    async def aiobreaker_call(i: int) -> int:
        return await aio.call_async(one_checkpoint, i)  # type: ignore[no-any-return]

    return {"aiobreaker": aiobreaker_call, "purgatory": purgatory_call}


async def run_guard(quick: bool) -> list[Result]:
    """The guard's figures: ON, ON with a timeout, OFF."""
    n, count = (2_000, 3) if quick else (50_000, 9)
    lean = breaky.Guard("lean", call_timeout=None)
    timed = breaky.Guard("timed", call_timeout=60.0)
    off = breaky.Guard("off")
    off.force_off()
    peers = _peers()

    async def guarded(i: int) -> object:
        return await lean.run(one_checkpoint, i)

    async def with_timeout(i: int) -> object:
        return await timed.run(one_checkpoint, i)

    async def move_on_after(i: int) -> object:
        with trio.move_on_after(60.0):
            return await one_checkpoint(i)
        return None  # pragma: no cover - never reached: 60 s

    async def refused(i: int) -> object:
        return await off.run(one_checkpoint, i)

    async def checkpoint(_: int) -> None:
        await trio.lowlevel.checkpoint()

    def timing(
        op: Callable[[int], Awaitable[object]],
    ) -> Callable[[int], Awaitable[float]]:
        async def measure(m: int) -> float:
            return await per_op(m, op)

        return measure

    # The overheads are small differences of two timings: each round times
    # the bare await and every breaker back to back, and the overhead is the
    # median of the rounds' differences, so that a slow spell of the machine
    # shifts both sides of a difference alike.
    on_path = {
        "bare": timing(one_checkpoint),
        "guard": timing(guarded),
        **{name: timing(call) for name, call in peers.items()},
    }
    differences: dict[str, list[float]] = {name: [] for name in on_path}
    for _ in range(count):
        medians = await rounds(n // 5, 5, on_path)
        for name, value in medians.items():
            differences[name].append(value - medians["bare"])
    overhead = {name: statistics.median(d) for name, d in differences.items()}
    medians = await rounds(
        n,
        count,
        {
            "bare": timing(one_checkpoint),
            "guard, timeout": timing(with_timeout),
            "move_on_after": timing(move_on_after),
            "guard OFF": timing(refused),
            "checkpoint": timing(checkpoint),
        },
    )
    us = 1e6
    bare = medians["bare"]
    best_peer = min(peers, key=lambda name: overhead[name])
    peer_note = ", ".join(f"{name} {overhead[name] * us:.2f} us" for name in peers)
    return [
        Result(
            name="guard overhead over a bare await (ON) vs the best peer's",
            unit="us",
            breaky=overhead["guard"] * us,
            floor=overhead[best_peer] * us,
            floor_name=f"{best_peer}'s overhead",
            target=0.5,
            note=f"bare await {bare * us:.2f} us; peers: {peer_note}",
        ),
        Result(
            name="guard with call_timeout vs move_on_after",
            unit="us",
            breaky=medians["guard, timeout"] * us,
            floor=medians["move_on_after"] * us,
            floor_name="trio.move_on_after + await",
            target=1.1,
        ),
        Result(
            name="guard OFF vs one checkpoint",
            unit="us",
            breaky=medians["guard OFF"] * us,
            floor=medians["checkpoint"] * us,
            floor_name="trio.lowlevel.checkpoint()",
            target=1.2,
        ),
    ]
