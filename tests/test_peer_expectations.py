"""What users of the other Python breakers rely on (issue 21), and the core's
defects under faults (issue 22, defects 4, 9, 10): each test failed before.

On the mock clock, but where a real run outside Trio is the point.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

import pytest
import trio
from support import answered_calls

import breaky
from breaky import OFF, State
from breaky.testing import internals

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock

DAY = 86_400.0


class Down(Exception):  # noqa: N818 - a dependency's state, as the tests use it
    def __init__(self, status: int | None = None) -> None:
        super().__init__("down")
        self.status = status


async def ok() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


async def down() -> str:
    await trio.lowlevel.checkpoint()
    raise Down


async def hang() -> str:
    await trio.sleep_forever()
    raise AssertionError  # pragma: no cover


# Failures in a row (21.1).


@pytest.mark.virtual_deadline(20 * DAY)
@pytest.mark.parametrize("call_timeout", [None, 5.0], ids=["lean", "timed"])
async def test_a_guard_never_trips_on_sporadic_errors_spread_over_days(
    autojump_clock: Clock, call_timeout: float | None
) -> None:
    api = breaky.Guard("api", failure_threshold=5, call_timeout=call_timeout)
    for _ in range(10):  # ten days, one error a day among many successes
        for _ in range(100):
            assert await api.run(ok) == "ok"
        with pytest.raises(Down):
            await api.run(down)
        await trio.sleep(DAY)
    assert api.state is State.ON
    assert api.statistics().failures == 1  # the last one, not yet reset
    for _ in range(4):  # but five in a row trip it
        with pytest.raises(Down):
            await api.run(down)
    assert api.state is State.OFF


async def test_an_exception_that_does_not_count_resets_the_count_too(
    autojump_clock: Clock,
) -> None:
    api = breaky.Guard(
        "api", failure_threshold=2, failure_exceptions=Down, call_timeout=None
    )
    with pytest.raises(Down):
        await api.run(down)
    with pytest.raises(KeyError):
        await api.run(_raises, KeyError("no such order"))
    assert api.statistics().failures == 0


async def _raises(error: Exception) -> None:
    await trio.lowlevel.checkpoint()
    raise error


async def test_a_guard_may_count_failures_since_it_turned_on(
    autojump_clock: Clock,
) -> None:
    api = breaky.Guard("api", failure_threshold=2, failures_in_a_row=False)
    with pytest.raises(Down):
        await api.run(down)
    assert await api.run(ok) == "ok"
    with pytest.raises(Down):
        await api.run(down)
    assert api.state is State.OFF


async def test_a_window_keeps_its_meaning_for_a_guard(autojump_clock: Clock) -> None:
    api = breaky.Guard("api", failure_threshold=2, failure_window=60)
    with pytest.raises(Down):
        await api.run(down)
    assert await api.run(ok) == "ok"
    with pytest.raises(Down):
        await api.run(down)
    assert api.state is State.OFF


async def test_a_resource_breaker_keeps_the_seeds_rule_unless_asked(
    autojump_clock: Clock,
) -> None:
    async def echo(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        seed = await sup.start_circuit_breaker("seed", echo, failure_threshold=2)
        in_a_row = await sup.start_circuit_breaker(
            "row", echo, failure_threshold=2, failures_in_a_row=True
        )
        for db in (seed, in_a_row):
            db.failure()
            assert await db.call("x") == "x"
            db.failure()
        assert seed.state is State.OFF
        assert in_a_row.state is State.ON


def test_failures_in_a_row_is_a_bool_or_none() -> None:
    with pytest.raises(TypeError, match=r"failures_in_a_row must be True, False"):
        breaky.Policy(failures_in_a_row=1)  # type: ignore[arg-type]


# A failure predicate that raises (21.2, 22.4).


def by_status(error: Exception) -> bool:
    return error.status >= 500  # type: ignore[attr-defined, no-any-return]


async def refused() -> str:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError("no one listens")


async def test_a_raising_predicate_counts_a_failure_and_keeps_the_callers_error(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="breaky")
    api = breaky.Guard(
        "api",
        failure_threshold=2,
        retry_timeout=10,
        failure_exceptions=by_status,
        max_concurrent=2,
    )
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            await api.run(refused)
    assert api.state is State.OFF
    # The trial's predicate raises too: the trial ends, and is no leak.
    await trio.sleep(10)
    with pytest.raises(ConnectionRefusedError):
        await api.run(refused)
    assert api.state is State.OFF
    assert not internals(api).trial
    await trio.sleep(10)
    assert await api.run(ok) == "ok"
    assert api.state is State.ON
    seen = internals(api)
    assert (seen.taken, seen.waiting) == (0, 0)
    stats = api.statistics()
    assert stats.calls == answered_calls(stats)
    assert (stats.errors, stats.replies, stats.pending) == (3, 1, 0)
    said = [r for r in caplog.records if "failure_exceptions raised" in r.message]
    errors = [r for r in said if r.levelno >= logging.WARNING]
    assert len(said) == 3
    assert len(errors) == 1  # once an outage, with its traceback; then DEBUG
    assert errors[0].exc_info is not None
    assert "ConnectionRefusedError: no one listens" in errors[0].getMessage()


async def test_a_raising_predicate_loses_no_answer_of_a_resource_breaker(
    autojump_clock: Clock,
) -> None:
    async def failing(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for request in inbox:
            request.fail(ConnectionError("reset"))

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", failing, failure_exceptions=by_status, call_timeout=None
        )
        with pytest.raises(ConnectionError, match="reset"):
            await db.call("x")
        stats = db.statistics()
        assert (stats.errors, stats.timeouts, stats.pending) == (1, 0, 0)
        assert stats.failures == 1


# Outside a Trio run (21.5).

module_guard = breaky.Guard("module level", failure_threshold=1)


def test_a_module_level_guards_sync_methods_work_outside_a_run() -> None:
    stats = module_guard.statistics()
    assert (stats.state, stats.calls) == (State.ON, 0)
    module_guard.failure()
    assert module_guard.state is State.OFF
    module_guard.reset()
    module_guard.force_off()
    assert module_guard.state is State.FORCED_OFF
    module_guard.force_on()
    assert module_guard.state is State.ON


@pytest.mark.parametrize("state", ["on", "off"])
def test_an_awaited_call_outside_trio_says_breaky_runs_on_trio(state: str) -> None:
    api = breaky.Guard("api")
    if state == "off":
        api.force_off()
    with pytest.raises(RuntimeError, match="breaky runs on Trio"):
        asyncio.run(api.run(asyncio.sleep, 0))
    assert api.statistics().calls == 0


# Logs that name the cause (21.6).


async def test_the_log_of_a_repeated_failed_start_names_its_cause(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="breaky")

    async def nested(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_refuse_to_connect)

    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", nested, failure_threshold=3)
    messages = [r.getMessage() for r in caplog.records if r.name == "breaky"]
    again = [m for m in messages if "failed to start again" in m]
    assert again
    assert all("(OSError: connection refused)" in m for m in again)
    first = next(r for r in caplog.records if r.getMessage().endswith("to start"))
    assert first.exc_info is not None
    assert type(first.exc_info[1]) is OSError  # the group of one, collapsed


async def _refuse_to_connect() -> None:
    await trio.lowlevel.checkpoint()
    raise OSError("connection refused")


# One trial at a time, whatever the switches (22.9).


async def test_force_off_then_reset_during_a_trial_starts_no_second_trial(
    autojump_clock: Clock,
) -> None:
    api = breaky.Guard("api", failure_threshold=1, retry_timeout=1, call_timeout=None)
    with pytest.raises(Down):
        await api.run(down)
    await trio.sleep(1)
    running = trio.Event()

    async def slow_trial() -> str:
        running.set()
        await trio.sleep(5)
        return "late"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, slow_trial)
        await running.wait()
        api.force_off()
        api.reset()
        assert internals(api).trial  # the first trial still holds its place
        assert await api.run(ok) is OFF  # not a second trial beside it
    # It ended, deciding nothing; the next call is the trial.
    assert not internals(api).trial
    assert await api.run(ok) == "ok"
    assert api.state is State.ON


# Small ones (22.10).


async def test_a_bad_timeout_is_refused_in_every_state(autojump_clock: Clock) -> None:
    api = breaky.Guard("api")
    api.force_off()
    with pytest.raises(TypeError, match="timeout"):
        await api.run(ok, timeout="x")  # type: ignore[arg-type]
    assert api.statistics().calls == 0


@pytest.mark.virtual_deadline(5 * DAY)
async def test_a_huge_backoff_never_waits_forever(autojump_clock: Clock) -> None:
    api = breaky.Guard("api", failure_threshold=1, retry_timeout=1, retry_backoff=1e308)
    with pytest.raises(Down):
        await api.run(down)
    for _ in range(3):
        retry_at = api.statistics().next_attempt_at
        assert retry_at is not None
        assert math.isfinite(retry_at)
        assert retry_at - trio.current_time() <= DAY
        await trio.sleep_until(retry_at)
        with pytest.raises(Down):
            await api.run(down)


# Turn ON by hand; when is the next attempt (21, gaps).


async def test_force_on_turns_a_guard_on_without_a_trial(autojump_clock: Clock) -> None:
    api = breaky.Guard("api", failure_threshold=1, retry_timeout=30)
    with pytest.raises(Down):
        await api.run(down)
    stats = api.statistics()
    assert stats.next_attempt_at == pytest.approx(trio.current_time() + 30)
    assert stats.last_failure_at == pytest.approx(trio.current_time())
    api.force_on()
    assert api.state is State.ON
    stats = api.statistics()
    assert (stats.next_attempt_at, stats.failures) == (None, 0)
    assert await api.run(ok) == "ok"
    assert stats.retries == 0  # no trial was made


async def test_force_on_restarts_a_resource_at_once(autojump_clock: Clock) -> None:
    starts: list[float] = []
    up = False

    async def flaky(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        starts.append(trio.current_time())
        if not up:
            raise ConnectionRefusedError
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        db: breaky.CircuitBreaker[str, Any] = await sup.start_circuit_breaker(
            "db", flaky, failure_threshold=1, retry_timeout=60
        )
        assert db.state is State.OFF
        up = True
        db.force_on()
        assert db.state is State.ON
        assert await db.call("x") == "x"  # queued while it started
        assert starts[-1] == starts[0]  # at once, not after 60 s
        stats = db.statistics()
        assert stats.next_attempt_at is None
        assert stats.last_failure_at == starts[0]


# Edges of the core's rules, each reached through a public view.


async def test_a_cast_answered_resets_failures_in_a_row(autojump_clock: Clock) -> None:
    async def echo(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for request in inbox:
            if request.message == "bad":
                request.fail(Down(500))
            else:
                request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db",
            echo,
            failure_threshold=3,
            failures_in_a_row=True,
            failure_exceptions=by_status,
        )
        db.failure()
        assert db.statistics().failures == 1
        assert await db.cast("fine") is None
        await trio.testing.wait_all_tasks_blocked()
        assert db.statistics().failures == 0  # a cast's reply is a success
        assert await db.cast("bad") is None  # a cast's counted failure
        await trio.testing.wait_all_tasks_blocked()
        assert db.statistics().failures == 1


async def test_a_raising_predicate_judging_a_cast_counts_a_failure(
    autojump_clock: Clock,
) -> None:
    async def failing(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for request in inbox:
            request.fail(ConnectionError("reset"))

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", failing, failure_exceptions=by_status
        )
        assert await db.cast("x") is None
        await trio.testing.wait_all_tasks_blocked()
        assert db.statistics().failures == 1


async def test_force_on_is_ignored_once_stopped_and_keeps_a_first_start(
    autojump_clock: Clock,
) -> None:
    started = trio.Event()

    async def slow(
        inbox: breaky.Inbox[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await started.wait()
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor() as sup, trio.open_nursery() as nursery:
        nursery.start_soon(sup.start_circuit_breaker, "db", slow)
        await trio.testing.wait_all_tasks_blocked()
        db: breaky.CircuitBreaker[str, str] = sup["db"]  # type: ignore[assignment]
        db.force_on()  # its first start has not settled: it stays STARTING
        assert db.state is State.STARTING
        started.set()
    api = breaky.Guard("api")
    async with breaky.open_supervisor() as sup:
        stopped = sup.guard("stopped")
    stopped.force_on()
    assert stopped.state is State.STOPPED
    assert api.state is State.ON


def test_internals_takes_a_breaker() -> None:
    with pytest.raises(TypeError, match="internals\\(\\) takes a breaker"):
        internals(object())
