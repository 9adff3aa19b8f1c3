"""Nested supervisors: a cluster connection that supervises its shards.

Run it with ``python examples/nested.py``. The outer breaker supervises the
cluster as a whole; inside it, each shard has a breaker of its own, so one bad
shard answers OFF while the others serve. Stopping the outer breaker stops
everything inside it.
"""

from __future__ import annotations

import trio

import breaky


async def shard(
    inbox: breaky.Inbox[str, str],
    number: int,
    broken: set[int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if number in broken:
        msg = f"shard {number} refuses connections"
        raise ConnectionRefusedError(msg)
    task_status.started()
    async for request in inbox:
        request.reply(f"shard {number}: {request.message}")


async def cluster(
    inbox: breaky.Inbox[tuple[int, str], str | None],
    shards: int,
    broken: set[int],
    *,
    task_status: trio.TaskStatus[breaky.Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with breaky.open_supervisor() as inner:
        breakers = [
            await inner.start_circuit_breaker(
                f"shard-{n}", shard, n, broken, failure_threshold=2, retry_timeout=5
            )
            for n in range(shards)
        ]
        task_status.started(inner)
        async for request in inbox:
            number, message = request.message
            answer = await breakers[number].call(message)
            request.reply(None if answer is breaky.OFF else answer)


async def main() -> list[str | None]:
    answers: list[str | None] = []
    async with breaky.open_supervisor() as sup:
        outer = await sup.start_circuit_breaker("cluster", cluster, 3, {1})
        for n in range(3):
            # The cluster's own breaker may be OFF too: that is no answer.
            answer = await outer.call((n, "hello"))
            answers.append(None if answer is breaky.OFF else answer)
        inner = outer.resource
        print({name: inner[name].state.name for name in inner})
        await sup.stop_circuit_breaker("cluster")
        print({name: inner[name].state.name for name in inner} or "all stopped")
    print(answers)
    return answers


if __name__ == "__main__":
    trio.run(main)
