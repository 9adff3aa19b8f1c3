"""``python -m breaky demo``: a real TCP service goes down and comes back.

The demo starts the key-value server of :mod:`breaky._demo.kv` in a subprocess on a
free port of 127.0.0.1, supervises a client connection to it with a breaker,
and keeps a few callers calling. Every ``outage_every`` seconds it kills the
server; the breaker trips OFF and backs off; after ``outage_length`` seconds
it starts the server again and the breaker recovers. It prints each state
change, a status line each second, and a summary at the end. With a metrics
port, it serves the breaker's Prometheus metrics on 127.0.0.1 meanwhile.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import sys
from typing import TYPE_CHECKING, TextIO

import trio

from breaky import Policy, State, open_supervisor

from .kit import call_and_count, log_lines, narrate, timestamped
from .kv import kv_connection
from .servers import KVServer

if TYPE_CHECKING:
    from collections.abc import Callable
    from threading import Thread
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

    from breaky import CircuitBreaker, Supervisor

POLICY = Policy(
    failure_threshold=3,
    retry_timeout=0.5,
    retry_backoff=2,
    max_retry_timeout=2,
    call_timeout=1,
)

# The timeline: FIRST_OUTAGE seconds of service, an outage of OUTAGE_LENGTH,
# then RECOVERY seconds to watch the breaker come back (its longest retry wait
# is 2 s). One such cycle is the shortest demo worth running.
FIRST_OUTAGE = 3
OUTAGE_LENGTH = 4
RECOVERY = 3
MIN_DURATION = FIRST_OUTAGE + OUTAGE_LENGTH + RECOVERY


class MetricsServer:
    """``/metrics`` on 127.0.0.1, in prometheus_client's own server thread."""

    def __init__(self, port: int) -> None:
        # Imported here: prometheus_client is an extra, needed only for this.
        from prometheus_client import (  # noqa: PLC0415
            CollectorRegistry,
            start_http_server,
        )

        self._registry: CollectorRegistry = CollectorRegistry()
        served: tuple[WSGIServer, Thread] = start_http_server(
            port, addr="127.0.0.1", registry=self._registry
        )
        self._server, self._thread = served
        self.url = f"http://127.0.0.1:{self._server.server_port}/metrics"

    def watch(self, supervisor: Supervisor) -> None:
        from breaky.prometheus import BreakyCollector  # noqa: PLC0415 - as above

        self._registry.register(BreakyCollector(supervisor))

    async def stop(self) -> None:
        # shutdown() waits for the serving thread, which may be waiting for
        # Trio to read the breakers: wait in a thread, not in Trio's.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._server.shutdown)
        self._server.server_close()
        self._thread.join()


def _start_metrics(port: int, out: TextIO) -> MetricsServer | None:
    """Serve metrics on ``port``, or say why not and return None."""
    try:
        return MetricsServer(port)
    except ImportError:
        reason = "it needs prometheus_client: pip install 'breaky[prometheus]'"
    except OSError as exc:
        reason = f"{exc.strerror or exc}"
    print(f"cannot serve metrics on 127.0.0.1:{port}: {reason}", file=out)
    return None


async def _caller(
    db: CircuitBreaker[str, str | None],
    n: int,
    answers: collections.Counter[str],
    stop: trio.Event,
) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        await call_and_count(db, f"SET k{n} {i}" if i % 2 else f"GET k{n}", answers)
        await trio.sleep(0.02)


async def _run_outages(  # noqa: PLR0913 - the demo's knobs
    *,
    db: CircuitBreaker[str, str | None],
    server: KVServer,
    say: Callable[[str], None],
    start: float,
    duration: float,
    outage_every: float,
) -> None:
    """Print a status line each second; kill and revive the server in turn."""
    last_calls = 0
    down_since: float | None = None
    for second in range(1, int(duration) + 1):
        await trio.sleep_until(start + second)
        s = db.statistics()
        say(
            f"[{s.state.name:>10}] {s.calls - last_calls:4} calls/s, "
            f"replies {s.replies}, OFF {s.off}, restarts {s.restarts + s.retries}"
        )
        last_calls = s.calls
        # An outage starts only if there is time left to watch the recovery.
        recovers_in_time = second + OUTAGE_LENGTH + RECOVERY <= duration
        if (
            down_since is None
            and recovers_in_time
            and second >= FIRST_OUTAGE
            and (second - FIRST_OUTAGE) % outage_every == 0
        ):
            await server.kill()
            down_since = second
            say("killed the server")
            await server.prepare()  # its successor, ready to listen
        elif down_since is not None and second - down_since >= OUTAGE_LENGTH:
            await server.start()
            down_since = None
            say("restarted the server")


async def demo(
    out: TextIO | None = None,
    *,
    duration: float = 30.0,
    outage_every: int = 10,
    metrics_port: int | None = None,
) -> int:
    """Run the demo, printing to ``out`` (stdout); return the exit status.

    It exits 0 when the breaker tripped, recovered, and every call got
    exactly one answer. With ``metrics_port`` (0: any free port), it serves
    Prometheus metrics on 127.0.0.1 while it runs; 2 if that cannot be done.
    """
    if not MIN_DURATION <= duration < math.inf:
        msg = (
            f"the demo's duration must be at least {MIN_DURATION} seconds "
            f"(one outage and its recovery), got {duration!r}"
        )
        raise ValueError(msg)
    stream = sys.stdout if out is None else out
    start = trio.current_time()
    metrics = None
    if metrics_port is not None:
        metrics = _start_metrics(metrics_port, stream)
        if metrics is None:
            return 2

    say = timestamped(stream, start)
    server = KVServer()
    answers: collections.Counter[str] = collections.Counter()
    stop = trio.Event()
    try:
        # breaky logs each crash with its traceback; here one line each will do.
        with log_lines(lambda message: say(f"log: {message}"), logging.WARNING):
            await server.start()
            say(f"key-value server listening on 127.0.0.1:{server.port}")
            if metrics is not None:
                say(f"Prometheus metrics at {metrics.url}")
            # The narration outlives the supervisor: its channel ends when the
            # supervisor closes, after the last change (STOPPED) is told.
            async with (
                trio.open_nursery() as narration,
                open_supervisor(shutdown_timeout=1) as sup,
            ):
                narration.start_soon(
                    functools.partial(narrate, names=True), sup.subscribe(), say
                )
                if metrics is not None:
                    metrics.watch(sup)
                db = await sup.start_circuit_breaker(
                    "kv", kv_connection, server.port, policy=POLICY
                )
                async with trio.open_nursery() as callers:
                    for n in range(3):
                        callers.start_soon(_caller, db, n, answers, stop)
                    await _run_outages(
                        db=db,
                        server=server,
                        say=say,
                        start=start,
                        duration=duration,
                        outage_every=outage_every,
                    )
                    stop.set()
                stats = db.statistics()
                # Tripped at least once, and serving again at the end.
                recovered = stats.trips > 0 and stats.state is State.ON
    finally:
        with trio.CancelScope(shield=True):
            await server.kill()
        if metrics is not None:
            await metrics.stop()
    unanswered = stats.calls - sum(answers.values())
    print(
        f"calls: {stats.calls}, answers: "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(answers.items()))
        + f"; unanswered: {unanswered}",
        file=stream,
    )
    lines, status = verdict(unanswered=unanswered, recovered=recovered)
    for line in lines:
        print(line, file=stream)
    return status


def verdict(*, unanswered: int, recovered: bool) -> tuple[list[str], int]:
    """The demo's last lines and exit status: 0 only if every guarantee held."""
    lines = [
        "every call got exactly one answer"
        if unanswered == 0
        else "SOME CALLS WERE NOT ANSWERED"
    ]
    if not recovered:
        lines.append("the breaker did not trip and recover in time")
    return lines, 0 if unanswered == 0 and recovered else 1
