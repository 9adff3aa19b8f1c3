"""A guard around a remote call: 50 callers, an outage, one trial at a time.

Run it with ``python examples/guard.py`` (about 12 seconds). ``Remote`` stands
in for a remote API that callers reach with a plain coroutine call; it is down
from the 3rd second to the 8th. Fifty callers keep calling it through one
guard. While it is down the guard is OFF: callers get ``breaky.OFF`` at once,
and once a second one trial call reaches the remote, so the dead API sees a
handful of requests instead of fifty callers' worth. When it is back, the
first trial turns the guard ON and every caller is served again.
"""

from __future__ import annotations

import collections

import trio

import breaky

CALLERS = 50
OUTAGE = (3.0, 8.0)  # seconds after the start: the remote is down
RUN_FOR = 12.0


class Remote:
    """The remote API: answers in 10 ms, refuses while it is down."""

    def __init__(self) -> None:
        self.start = trio.current_time()
        self.seen_while_down = 0

    def down(self) -> bool:
        now = trio.current_time() - self.start
        return OUTAGE[0] <= now < OUTAGE[1]

    async def get(self, item: int) -> str:
        await trio.sleep(0.01)
        if self.down():
            self.seen_while_down += 1
            raise ConnectionRefusedError("the remote API is down")
        return f"item {item}"


async def main() -> dict[str, object]:
    remote = Remote()
    api = breaky.Guard(
        "remote", failure_threshold=5, retry_timeout=1.0, call_timeout=0.5
    )
    answers: collections.Counter[str] = collections.Counter()

    async def caller(n: int) -> None:
        while trio.current_time() - remote.start < RUN_FOR:
            try:
                reply = await api.run(remote.get, n)
            except ConnectionRefusedError:
                answers["refused"] += 1
                await trio.sleep(0.1)
                continue
            except breaky.CallTimeout:  # call_timeout passed: one failure too
                answers["timeout"] += 1
                await trio.sleep(0.1)
                continue
            if reply is breaky.OFF:
                answers["OFF"] += 1
                await trio.sleep(0.1)  # degrade: try again later
            else:
                answers["reply"] += 1

    async def narrate() -> None:
        async with api.subscribe() as changes:
            async for change in changes:
                at = change.time - remote.start
                print(f"{at:5.2f} s  {change.old.name} -> {change.new.name}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(narrate)
        async with trio.open_nursery() as callers:
            for n in range(CALLERS):
                callers.start_soon(caller, n)
        nursery.cancel_scope.cancel()
    stats = api.statistics()
    print(
        f"replies {answers['reply']}, OFF {answers['OFF']}, "
        f"refused {answers['refused']}; the remote saw "
        f"{remote.seen_while_down} calls while down; trials {stats.retries}"
    )
    return {
        **answers,
        "seen_while_down": remote.seen_while_down,
        "trials": stats.retries,
        "trips": stats.trips,
        "state": api.state.name,
    }


if __name__ == "__main__":
    trio.run(main)
