"""Re-attempts, hedges and replicas: three replicas of a flaky, sometimes slow API.

Run it with ``python examples/attempts.py`` (about 25 seconds). ``Replica``
stands in for one of three servers holding the same data. Each answers in
10 ms, except that one request in ten fails at once (a reset connection) and
one in fifty takes 500 ms. The third replica goes down from the 5th second to
the 15th.

Twenty callers read through one keyed guard with ``run_any``: each call goes
to a replica that is not OFF, the least busy; a failure is made again on
another replica (``attempts=3``), and a call still unanswered after 20 ms is
hedged on another. Once half its calls of the last 2 s have failed, the
third replica's guard is OFF while it is down, and calls go to the other two;
the attempt budget keeps the extra requests to a fifth of the calls at most.
"""

from __future__ import annotations

import collections
import random

import trio

import breaky

CALLERS = 20
RUN_FOR = 25.0
DOWN = ("replica-3", 5.0, 15.0)  # which replica is down, from when to when


class Replica:
    """One server: 10 ms, one request in ten reset, one in fifty slow."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.start = trio.current_time()
        self.requests = 0
        self.while_down = 0

    def down(self) -> bool:
        name, since, until = DOWN
        now = trio.current_time() - self.start
        return self.name == name and since <= now < until

    async def get(self, item: int) -> str:
        self.requests += 1
        if self.down():
            self.while_down += 1
            msg = f"{self.name} is down"
            raise ConnectionRefusedError(msg)
        draw = self.rng.random()
        if draw < 0.1:
            msg = f"{self.name} reset the connection"
            raise ConnectionResetError(msg)
        await trio.sleep(0.5 if draw > 0.98 else 0.01)
        return f"item {item} from {self.name}"


async def main() -> dict[str, object]:
    rng = random.Random(1)  # noqa: S311 - a repeatable story, not crypto
    replicas = {
        name: Replica(name, rng) for name in ("replica-1", "replica-2", "replica-3")
    }
    answers: collections.Counter[str] = collections.Counter()
    slowest = 0.0

    async def read(name: str, item: int) -> str:
        return await replicas[name].get(item)

    async with breaky.open_supervisor() as sup:
        group = sup.keyed_guard(
            "replicas",
            # Half the calls failing trips a replica; one in ten does not.
            failure_rate=0.5,
            minimum_calls=10,
            failure_window=2.0,
            retry_timeout=2.0,
            call_timeout=1.0,
            attempts=3,
            hedge_after=0.02,
            rng=rng,
        )

        async def caller(n: int) -> None:
            nonlocal slowest
            item = 0
            while trio.current_time() < start + RUN_FOR:
                item += 1
                began = trio.current_time()
                try:
                    answer = await group.run_any(
                        list(replicas), read, n * 10_000 + item
                    )
                except ConnectionError:
                    answers["error"] += 1
                else:
                    answers["OFF" if answer is breaky.OFF else "ok"] += 1
                    slowest = max(slowest, trio.current_time() - began)
                await trio.sleep(0.05)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for n in range(CALLERS):
                nursery.start_soon(caller, n)
        stats = group.statistics()

    calls = sum(answers.values())
    seen: dict[str, object] = {
        **answers,
        "calls": calls,
        "extra": stats.reattempts + stats.hedges,
        "denied": stats.attempts_denied,
        "requests": sum(r.requests for r in replicas.values()),
        "while_down": sum(r.while_down for r in replicas.values()),
        "trips": stats.trips,
        "slowest": slowest,
    }
    print(
        f"{calls} calls: {answers['ok']} answered, {answers['error']} errors, "
        f"{answers['OFF']} OFF; {stats.reattempts} re-attempts and "
        f"{stats.hedges} hedges ({stats.attempts_denied} denied by the budget "
        f"or an OFF guard) for {seen['requests']} requests"
    )
    print(
        f"the down replica saw {seen['while_down']} requests in 10 s "
        f"({stats.trips} trips); the slowest answer took {slowest * 1e3:.0f} ms"
    )
    return seen


if __name__ == "__main__":
    trio.run(main)
