"""The demo's real service: a key-value server over TCP, and its client.

The client connection is the resource that the demo's breaker supervises.

The protocol, one line each way: ``SET key value`` answers ``OK``, ``GET key``
answers ``VALUE value`` or ``NONE``; anything else answers ``ERROR ...``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from breaky import Inbox

HOST = "127.0.0.1"


class KVError(Exception):
    """The server answered ``ERROR``."""


class LineStream:
    """Lines over a Trio stream: send one, receive one."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def send_line(self, line: str) -> None:
        await self._stream.send_all(line.encode() + b"\n")

    async def receive_line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                msg = "the connection was closed"
                raise ConnectionResetError(msg)
            self._buffer += data
        line, _, rest = self._buffer.partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode()


async def serve(
    port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the key-value protocol on 127.0.0.1:``port`` (0: any free port)."""
    data: dict[str, str] = {}

    async def handle(stream: trio.SocketStream) -> None:
        lines = LineStream(stream)
        try:
            while True:
                command, _, rest = (await lines.receive_line()).partition(" ")
                if command == "SET":
                    key, _, value = rest.partition(" ")
                    data[key] = value
                    await lines.send_line("OK")
                elif command == "GET":
                    found = data.get(rest)
                    await lines.send_line("NONE" if found is None else f"VALUE {found}")
                else:
                    await lines.send_line(f"ERROR unknown command {command!r}")
        except (ConnectionResetError, trio.BrokenResourceError):
            return

    listeners = await trio.open_tcp_listeners(port, host=HOST)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def kv_connection(
    inbox: Inbox[str, str | None],
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A client connection, the resource a breaker supervises.

    Each request is a command line; the reply is the value (``GET``), ``None``
    for a missing key, or ``"OK"``. A broken connection ends the resource (a
    crash); a refused one fails its start.
    """
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        lines = LineStream(stream)
        task_status.started(f"{HOST}:{port}")
        async for request in inbox:
            await lines.send_line(request.message)
            answer = await lines.receive_line()
            if answer.startswith("VALUE "):
                request.reply(answer.removeprefix("VALUE "))
            elif answer == "NONE":
                request.reply(None)
            elif answer == "OK":
                request.reply("OK")
            else:
                request.fail(KVError(answer))


def main(port: int, *, standby: bool) -> None:  # pragma: no cover - a subprocess
    """Run the server; print ``PORT n`` once it listens (for the parent).

    On ``standby``, first wait for a line on stdin: the parent starts the
    process ahead of time and says when to listen.
    """
    if standby:
        sys.stdin.readline()

    async def announce_and_serve() -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve, port)
            print(f"PORT {bound}", flush=True)  # noqa: T201

    trio.run(announce_and_serve)


if __name__ == "__main__":  # pragma: no cover - run as a subprocess
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0, standby="--standby" in sys.argv)
