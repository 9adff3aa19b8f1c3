"""Re-attempts and hedges (issue 23): what they cost and what they spare.

- Outage amplification, real TCP: 100 callers loop through a guard while the
  dependency's port is closed for a while; the connections made to the dead
  port with ``attempts=3`` against the same guard with ``attempts=1``. The
  peer's figure, measured the same way in the same run: stamina
  (``attempts=3``) around aiobreaker, against aiobreaker alone.
- Transient errors (mock clock): 10% of calls fail at random; with
  ``attempts=3``, the share of calls that succeed, and the extra attempts
  per call.
- Tail latency (mock clock): a dependency answering in 10 ms (give or take a
  fifth), 2% of calls in 500 ms; p99 with ``attempts=2`` and ``hedge_after``
  at the measured p95, against the same guard unhedged; and the hedges per
  call.
- Cost when nothing fails: a guard with ``attempts=3`` whose calls succeed,
  its overhead over a bare await against the same guard's with one attempt
  (lean, and with the default call timeout).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import statistics
from typing import TYPE_CHECKING

import attrs
import trio
import trio.testing

import breaky
from benchmarks._harness import Result, per_op, rounds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

# How long a caller waits after an OFF answer or an error before it calls
# again (a client's own loop); after a reply, it calls again at once.
PAUSE = 0.02


@attrs.define
class Dependency:
    """A TCP service that can be taken down: its port closed, then reopened."""

    port: int = 0
    up: bool = True
    dead_port: int = 0  # connections tried while it was down
    _scope: trio.CancelScope | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as self._scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started()
            await trio.serve_listeners(_echo, listeners)

    def down(self) -> None:
        self.up = False
        assert self._scope is not None  # noqa: S101 - serving
        self._scope.cancel()

    async def request(self) -> bytes:
        """One request on a new connection: what a client does per call."""
        if not self.up:
            self.dead_port += 1
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with stream:
            await stream.send_all(b"ping")
            return await stream.receive_some()


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        data = await stream.receive_some()
        if data:
            await stream.send_all(data)


async def outage(
    through: Callable[[Callable[[], Awaitable[bytes]]], Awaitable[object]],
    callers: int,
    down_for: float,
) -> int:
    """Connections to the dead port while ``callers`` loop through ``through``."""
    dependency = Dependency()
    async with trio.open_nursery() as nursery:
        await nursery.start(dependency.serve)

        async def caller() -> None:
            while True:
                try:
                    answer = await through(dependency.request)
                except Exception:  # noqa: BLE001 - the dependency's errors
                    answer = None
                if answer is None or answer is breaky.OFF:
                    await trio.sleep(PAUSE)
                else:
                    await trio.sleep(PAUSE / 4)  # a client's think time

        for _ in range(callers):
            nursery.start_soon(caller)
        await trio.sleep(1.0)  # every caller served
        dependency.down()
        await trio.sleep(down_for)
        dead = dependency.dead_port
        nursery.cancel_scope.cancel()
    return dead


def guard_for_outage(attempts: int) -> breaky.Guard:
    return breaky.Guard(
        f"dependency (attempts={attempts})",
        attempts=attempts,
        failure_threshold=5,
        retry_timeout=1.0,
        call_timeout=2.0,
        # A refused connection, or one reset as the server went away.
        failure_exceptions=(OSError, trio.BrokenResourceError),
    )


async def bench_outage(callers: int, down_for: float) -> list[Result]:
    import aiobreaker  # noqa: PLC0415 - benchmark-only dependencies
    import stamina  # noqa: PLC0415

    stamina.instrumentation.set_on_retry_hooks([])  # no log line per retry

    def aiobreaker_through(
        *, retry: bool
    ) -> Callable[[Callable[[], Awaitable[bytes]]], Awaitable[object]]:
        breaker = aiobreaker.CircuitBreaker(
            fail_max=5, timeout_duration=dt.timedelta(seconds=1)
        )

        async def once(request: Callable[[], Awaitable[bytes]]) -> object:
            try:
                return await breaker.call_async(request)
            except aiobreaker.CircuitBreakerError:
                return breaky.OFF

        # The same waits as a guard's: 50 ms doubling up to 1 s, jittered.
        again = stamina.retry(
            on=OSError, attempts=3, wait_initial=0.05, wait_max=1.0, wait_jitter=0.05
        )(once)
        return again if retry else once

    one = guard_for_outage(1)
    three = guard_for_outage(3)
    dead = {
        "breaky 1": await outage(one.run, callers, down_for),
        "breaky 3": await outage(three.run, callers, down_for),
        "aiobreaker": await outage(aiobreaker_through(retry=False), callers, down_for),
        "stamina 3": await outage(aiobreaker_through(retry=True), callers, down_for),
    }
    stats = three.statistics()
    peer_ratio = dead["stamina 3"] / max(dead["aiobreaker"], 1)
    return [
        Result(
            f"outage: {callers} callers, {down_for:g} s down, attempts=3",
            "requests",
            dead["breaky 3"],
            dead["breaky 1"],
            "the same guard with attempts=1",
            target=1.1,
            note=(
                f"requests to the dead port; {stats.reattempts} re-attempts, "
                f"{stats.attempts_denied} denied; peer: stamina(attempts=3) "
                f"around aiobreaker {dead['stamina 3']} vs aiobreaker alone "
                f"{dead['aiobreaker']}: {peer_ratio:.2f}x"
            ),
        ),
        Result(
            "outage: the peer, stamina around aiobreaker",
            "requests",
            dead["stamina 3"],
            dead["aiobreaker"],
            "aiobreaker alone",
            note="reported, not ours: both under Trio, in the same run",
        ),
    ]


async def transient(calls: int, callers: int) -> tuple[int, breaky.BreakerStatistics]:
    """``calls`` calls, 10% of attempts failing at random; the successes."""
    rng = random.Random(23)  # noqa: S311 - repeatable, not crypto
    guard = breaky.Guard(
        "flaky",
        attempts=3,
        failure_rate=0.5,
        failure_window=10,
        minimum_calls=20,
        call_timeout=1.0,
    )

    async def flaky() -> str:
        await trio.sleep(0.005)
        if rng.random() < 0.1:
            raise ConnectionError
        return "ok"

    succeeded = 0

    async def caller(n: int) -> None:
        nonlocal succeeded
        for _ in range(n):
            try:
                if await guard.run(flaky) == "ok":
                    succeeded += 1
            except ConnectionError:
                pass
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller, calls // callers)
    return succeeded, guard.statistics()


def bench_transient(calls: int) -> list[Result]:
    succeeded, stats = trio.run(
        transient, calls, 50, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    made = stats.calls - stats.reattempts - stats.hedges
    extra = stats.reattempts + stats.hedges
    return [
        Result(
            "transient errors (10%), attempts=3: succeeded",
            "calls",
            succeeded,
            made,
            "the calls made",
            target=0.995,
            sense="min",
            note=f"{stats.attempts_denied} extra attempts denied, {stats.trips} trips",
        ),
        Result(
            "transient errors (10%), attempts=3: extra attempts",
            "attempts",
            extra,
            made,
            "the calls made",
            target=0.12,
        ),
    ]


async def latencies(
    calls: int, callers: int, hedge_after: float | None = None
) -> tuple[list[float], breaky.BreakerStatistics]:
    """Each call's time through a guard, hedged or not (mock clock)."""
    rng = random.Random(5)  # noqa: S311 - repeatable, not crypto
    guard = breaky.Guard(
        "tail",
        call_timeout=5.0,
        attempts=1 if hedge_after is None else 2,
        hedge_after=hedge_after,
    )
    seen: list[float] = []

    async def dependency() -> str:
        # 10 ms give or take a fifth; one call in fifty takes 500 ms.
        slow = rng.random() < 0.02
        await trio.sleep(0.5 if slow else 0.01 * rng.uniform(0.8, 1.2))
        return "ok"

    async def caller(n: int) -> None:
        for _ in range(n):
            start = trio.current_time()
            await guard.run(dependency)
            seen.append(trio.current_time() - start)
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller, calls // callers)
    return seen, guard.statistics()


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def bench_tail(calls: int) -> list[Result]:
    def run(hedge_after: float | None) -> tuple[list[float], breaky.BreakerStatistics]:
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(latencies, calls, 50, hedge_after, clock=clock)

    plain, _ = run(None)
    p95 = percentile(plain, 95)
    hedged, stats = run(p95)
    made = stats.calls - stats.hedges - stats.reattempts
    return [
        Result(
            "tail latency: p99, attempts=2, hedge_after=p95",
            "ms",
            percentile(hedged, 99) * 1e3,
            percentile(plain, 99) * 1e3,
            "the same guard unhedged",
            target=0.2,
            note=f"hedge_after {p95 * 1e3:.1f} ms (the unhedged p95; mock clock)",
        ),
        Result(
            "tail latency: hedges",
            "attempts",
            stats.hedges + stats.reattempts,
            made,
            "the calls made",
            target=0.1,
            note=f"{stats.attempts_denied} denied",
        ),
    ]


async def one_checkpoint(i: int = 0) -> int:
    await trio.lowlevel.checkpoint()
    return i


async def bench_cost(n: int, count: int) -> list[Result]:
    """ON overhead over a bare await: attempts=3 against attempts=1."""
    guards = {
        (timeout, attempts): breaky.Guard(
            f"cost {timeout} {attempts}", attempts=attempts, call_timeout=timeout
        )
        for timeout in (None, 5.0)
        for attempts in (1, 3)
    }

    def timing(guard: breaky.Guard | None) -> Callable[[int], Awaitable[float]]:
        async def through(i: int) -> object:
            assert guard is not None  # noqa: S101
            return await guard.run(one_checkpoint, i)

        op = one_checkpoint if guard is None else through

        async def measure(m: int) -> float:
            return await per_op(m, op)

        return measure

    pairs = {"bare": timing(None)} | {str(k): timing(g) for k, g in guards.items()}
    differences: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(count):
        medians = await rounds(n // 5, 5, pairs)
        for name, value in medians.items():
            differences[name].append(value - medians["bare"])
    overhead = {name: statistics.median(d) for name, d in differences.items()}
    results = []
    for timeout, label in ((None, "lean"), (5.0, "call_timeout=5")):
        results.append(
            Result(
                f"ON overhead, attempts=3 vs 1 ({label})",
                "us",
                overhead[str((timeout, 3))] * 1e6,
                overhead[str((timeout, 1))] * 1e6,
                "the same guard with attempts=1",
                target=1.2,
                note="by time; the overheads over a bare await, same rounds",
            )
        )
    return results


async def run_attempts(quick: bool) -> list[Result]:
    logging.getLogger("breaky").setLevel(logging.CRITICAL)
    n, count = (2_000, 3) if quick else (50_000, 9)
    results = await bench_cost(n, count)
    results.extend(await bench_outage(100, 1.0 if quick else 10.0))
    return results


def run_mock_clock(quick: bool) -> list[Result]:
    """The figures measured on a mock clock of their own (their own runs)."""
    return [
        *bench_transient(2_000 if quick else 20_000),
        *bench_tail(1_000 if quick else 10_000),
    ]
