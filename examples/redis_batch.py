"""Many small reads, few round trips: a resource that batches its requests.

Run it with ``python examples/redis_batch.py [PORT]`` (it needs ``pip install
coredis`` and a redis-server on 127.0.0.1, port 6379 by default; it writes
the keys ``example:user:0`` to ``example:user:999``).

A thousand callers each ask for one key at the same moment. The resource takes
one request with ``async for``, then everything else already queued with
``inbox.receive_nowait()``, and answers the whole batch with one ``MGET``:
one round trip to Redis instead of one per call. Redis's own statistics count
the round trips.
"""

from __future__ import annotations

import contextlib
import sys

import coredis
import trio
from coredis.retry import NoRetryPolicy

import breaky

MAX_BATCH = 100  # keys in one MGET at most


async def redis_reads(
    inbox: breaky.Inbox[str, str | None],
    port: int,
    *,
    task_status: trio.TaskStatus[coredis.Redis[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The resource: a Redis client that answers each batch with one MGET."""
    # Retrying is the breaker's job, not the client's.
    async with coredis.Redis(
        host="127.0.0.1", port=port, decode_responses=True, retry_policy=NoRetryPolicy()
    ) as client:
        await client.ping()  # refused or silent: a failed start
        task_status.started(client)
        async for first in inbox:
            batch = [first]
            with contextlib.suppress(trio.WouldBlock):  # until none is queued
                while len(batch) < MAX_BATCH:
                    batch.append(inbox.receive_nowait())
            values = await client.mget([request.message for request in batch])
            for request, value in zip(batch, values, strict=True):
                request.reply(value)


async def mget_calls(client: coredis.Redis[str]) -> int:
    """How many MGET commands this Redis has served so far."""
    stats = await client.info("commandstats")
    mget = stats.get("cmdstat_mget")  # absent until the first MGET
    calls = mget.get("calls") if isinstance(mget, dict) else None
    return calls if isinstance(calls, int) else 0  # coredis parses the numbers


async def main(port: int = 6379) -> dict[str, int]:
    users = {f"example:user:{n}": f"user {n}" for n in range(1000)}
    answers: dict[str, str | None] = {}
    async with coredis.Redis(
        host="127.0.0.1", port=port, decode_responses=True
    ) as admin:
        # A copy made for coredis: its Mapping[KeyT, ValueT] is not a
        # dict[str, str] (the key type of a Mapping is invariant).
        await admin.mset(dict(users.items()))
        before = await mget_calls(admin)
        async with breaky.open_supervisor() as sup:
            cache = await sup.start_circuit_breaker("users", redis_reads, port)

            async def read(key: str) -> None:
                answer = await cache.call(key)
                if answer is not breaky.OFF:
                    answers[key] = answer

            async with trio.open_nursery() as nursery:
                for key in users:
                    nursery.start_soon(read, key)
        round_trips = await mget_calls(admin) - before
    seen = {
        "calls": len(users),
        "right": sum(answers.get(key) == name for key, name in users.items()),
        "round_trips": round_trips,
    }
    print(seen)
    return seen


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 6379)
