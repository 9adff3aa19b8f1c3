"""Three OS processes share a breaker through a real redis-server.

Each runs ``tests/fleet_nodes.py`` and prints its starts and state changes;
the test reads them. The resource they share fails while a file exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import servers
import trio

import breaky

if TYPE_CHECKING:
    from servers import ServerProcess

TESTS = Path(__file__).parent
pytestmark = servers.coredis_runs_on_this_trio

TTL = 1.5
# The children import the breaky under test: this checkout, or the wheel.
ENV = {**os.environ, "PYTHONPATH": str(Path(breaky.__file__).parent.parent)}


@attrs.define
class Child:
    name: str
    process: trio.Process
    lines: list[str] = attrs.Factory(list)

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode().split(" ", 2)[2] for line in done)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


async def until(condition: object, within: float = 10.0) -> None:
    assert callable(condition)
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - children's output changes it
            await trio.sleep(0.01)


async def test_three_processes_trip_probe_hand_over_and_recover(
    redis_server: ServerProcess, tmp_path: Path
) -> None:
    down = tmp_path / "down"
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    async with trio.open_nursery() as nursery:
        children = []
        for i in range(3):
            name = f"p{i}"
            process = await trio.lowlevel.open_process(
                [sys.executable, "fleet_nodes.py", url, name, "2", str(TTL), str(down)],
                cwd=TESTS,
                env=ENV,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            child = Child(name, process)
            children.append(child)
            nursery.start_soon(child.read)
        try:
            await until(lambda: all(c.count("ready") for c in children), within=30)
            down.touch()
            await until(lambda: all(c.count("ON->OFF") for c in children))
            await trio.sleep(0.5)  # the fleet settles: one prober
            before = [c.count("start") for c in children]
            await trio.sleep(1.5)
            tries = [
                c.count("start") - b for c, b in zip(children, before, strict=True)
            ]
            assert sorted(tries)[:2] == [0, 0], tries
            prober = children[tries.index(max(tries))]
            assert max(tries) >= 4
            # The prober dies without a word: another takes over in time.
            prober.process.kill()
            rest = [c for c in children if c is not prober]
            before = [c.count("start") for c in rest]
            await until(
                lambda: any(
                    c.count("start") > b for c, b in zip(rest, before, strict=True)
                ),
                within=TTL + 1,
            )
            down.unlink()
            await until(lambda: all(c.count("OFF->ON") for c in rest))
            assert any("after fleet ON" in line for c in rest for line in c.lines)
        finally:
            for child in children:
                child.process.kill()
                await child.process.wait()
                assert child.process.stdin is not None
                await child.process.stdin.aclose()
