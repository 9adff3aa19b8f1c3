"""Real servers in subprocesses on 127.0.0.1, for tests that need the real thing.

A test starts a server, kills it, starts it again on the same port, freezes it
(SIGSTOP: its sockets stay open and nothing answers) and thaws it (SIGCONT).
The servers are other people's: ``redis-server`` and Hypercorn (serving a
tiny ASGI app, ``tests/asgi_app.py``). The process handling is the package's
own (:mod:`breaky._servers`, which the demos and benchmarks use too).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from breaky._servers import ServerProcess, free_port

__all__ = ["ServerProcess", "coredis_runs_on_this_trio", "free_port", "hypercorn"]

TESTS = Path(__file__).parent

# coredis runs on anyio, whose Trio backend needs a newer trio than the oldest
# that breaky supports (anyio 4.16 asks for trio >= 0.32). On trio 0.25 (nox's
# tests_oldest) its cancel scopes get corrupted, so the coredis tests skip.
_TRIO = tuple(int(part) for part in trio.__version__.split(".")[:2])
coredis_runs_on_this_trio = pytest.mark.skipif(
    _TRIO < (0, 32), reason="coredis needs trio >= 0.32 (through anyio)"
)


def hypercorn(port: int | None = None) -> ServerProcess:
    """Hypercorn serving ``tests/asgi_app.py`` (an app, not a server, of ours)."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "hypercorn",
        # Serve in this one process: with workers (one by default) a kill or a
        # SIGSTOP would reach only the parent, while a worker kept serving.
        "--workers",
        "0",
        "--bind",
        f"127.0.0.1:{port}",
        "asgi_app:app",
    ]
    return ServerProcess(argv, port, "hypercorn", cwd=TESTS)
