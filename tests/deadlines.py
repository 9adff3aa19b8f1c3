"""Every test has a deadline, so that a lost answer is a red test with a name.

A call that nobody answers must not hang the suite until CI kills it. This
plugin (loaded by conftest.py) gives every test two limits:

- Real time: pytest-timeout's ``timeout`` (pyproject.toml), or
  ``@pytest.mark.timeout(s)`` for a test that needs more, AUTOJUMP_TIMEOUT
  for the tests on ``autojump_clock``, whose time is all virtual. A Trio test
  is cancelled from inside Trio when its limit passes, so that it fails
  cleanly with its own traceback and the next test runs; pytest-timeout
  itself, which interrupts from a signal handler and leaves a Trio run torn,
  stands behind it, BACKSTOP seconds later, for sync tests and for a test
  that does not respond to cancellation (or hangs in a fixture).
- Trio's clock: VIRTUAL_DEADLINE, or ``@pytest.mark.virtual_deadline(s)``.
  This is what catches the case the mock clock hides: a timer that keeps
  firing (a retry loop) while the answer never comes, so that virtual time
  runs on at full speed. It is checked at each task step rather than set as a
  Trio deadline, so the mock clock never jumps to it: a test on a MockClock
  that waits on real I/O (a subprocess, a thread) waits for it as before. A
  test whose tasks all wait for nothing is idle on both clocks, and the
  real-time limit fails it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

VIRTUAL_DEADLINE = 24 * 3600.0
AUTOJUMP_TIMEOUT = 30.0  # the slowest such test takes about 3 s
BACKSTOP = 30.0
_REAL_LIMIT = pytest.StashKey[float]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtual_deadline(seconds): fail the Trio test once Trio's clock "
        "(virtual under a MockClock) has passed this many seconds",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
            continue  # pytest-timeout's own limit alone
        marker = item.get_closest_marker("timeout")
        if marker is not None:
            seconds = float(marker.args[0])
        elif "autojump_clock" in getattr(item, "fixturenames", ()):
            seconds = AUTOJUMP_TIMEOUT
        else:
            seconds = float(item.config.getini("timeout") or 0)
        item.stash[_REAL_LIMIT] = seconds
        if seconds > 0:
            item.add_marker(pytest.mark.timeout(seconds + BACKSTOP), append=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    # tryfirst: this wraps the test before pytest-trio hands it to trio.run.
    test = getattr(item, "obj", None)
    if _REAL_LIMIT in item.stash and inspect.iscoroutinefunction(test):
        marker = item.get_closest_marker("virtual_deadline")
        virtual = VIRTUAL_DEADLINE if marker is None else float(marker.args[0])
        real = item.stash[_REAL_LIMIT]
        item.obj = with_deadlines(test, virtual=virtual, real=real)  # type: ignore[attr-defined]
    yield


@attrs.define(eq=False)  # an instrument is kept in a set
class _Watch(trio.abc.Instrument):
    """Cancel the test's scope when either clock passes its limit."""

    scope: trio.CancelScope
    virtual_at: float
    expired: str = ""

    def before_task_step(self, task: trio.lowlevel.Task) -> None:  # noqa: ARG002
        if not self.expired and trio.current_time() > self.virtual_at:
            self.expire("on Trio's clock")

    def expire(self, which: str) -> None:
        self.expired = which
        self.scope.cancel()


def with_deadlines(
    test: Callable[..., Any], *, virtual: float, real: float
) -> Callable[..., Any]:
    """``test``, failed if it runs ``virtual`` s on Trio's clock or ``real`` s."""

    @functools.wraps(test)
    async def bounded(**kwargs: Any) -> Any:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            watch = _Watch(scope, trio.current_time() + virtual)
            timer = threading.Timer(real, _expire_from_thread, (token, watch))
            timer.daemon = True
            trio.lowlevel.add_instrument(watch)
            if real > 0:
                timer.start()
            try:
                return await test(**kwargs)
            finally:
                timer.cancel()
                trio.lowlevel.remove_instrument(watch)
        limit = virtual if watch.expired == "on Trio's clock" else real
        pytest.fail(
            f"still running after {limit:g} s {watch.expired}: "
            "a call or an event that nobody answers?"
        )

    return bounded


def _expire_from_thread(token: trio.lowlevel.TrioToken, watch: _Watch) -> None:
    with contextlib.suppress(trio.RunFinishedError):  # the test ended just now
        token.run_sync_soon(watch.expire, "of real time")
