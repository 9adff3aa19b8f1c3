"""A simulated dependency whose capacity is a number of workers (mock clock).

Requests beyond its workers queue inside it, as a real server's do: its
latency (arrival to answer) grows with the queue while its throughput stays
at ``workers / service``. The capacity can change while it runs.
"""

from __future__ import annotations

import math
import random

import attrs
import trio


@attrs.define(eq=False)
class Workers:
    """``workers`` requests served at once, ``service`` seconds each (jittered)."""

    workers: int
    service: float = 0.010
    # Lognormal spread of each request's time (0.3: most within +/- 30%).
    spread: float = 0.3
    rng: random.Random = attrs.field(factory=lambda: random.Random(24))
    # (when it was answered, its latency) of every answered request.
    answers: list[tuple[float, float]] = attrs.Factory(list)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.workers)

    def resize(self, workers: int) -> None:
        """Change the capacity: more workers start queued requests at once."""
        self.workers = self._limiter.total_tokens = workers

    async def request(self, payload: object = None) -> object:
        """Wait for a worker (queued inside), take ``service`` seconds, answer."""
        arrived = trio.current_time()
        async with self._limiter:
            sigma = math.sqrt(math.log(1 + self.spread**2))
            await trio.sleep(
                self.service * math.exp(self.rng.gauss(-(sigma**2) / 2, sigma))
            )
        now = trio.current_time()
        self.answers.append((now, now - arrived))
        return payload

    def throughput(self, start: float, end: float) -> float:
        """Answers per second between ``start`` and ``end``."""
        return sum(1 for t, _ in self.answers if start <= t < end) / (end - start)

    def p99(self, start: float, end: float) -> float:
        """The 99th percentile of the latency of answers in ``[start, end)``."""
        latencies = sorted(x for t, x in self.answers if start <= t < end)
        return latencies[int(0.99 * (len(latencies) - 1))]

    def capacity(self) -> float:
        """Answers per second when every worker is busy."""
        return self.workers / self.service
