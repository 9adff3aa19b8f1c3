"""The circuit breaker's behaviour, end to end, on Trio's mock clock."""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from seam import inside
from support import World, service

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock

# Every test takes ``autojump_clock``: pytest-trio installs a clock only when
# the test itself asks for it. No test sleeps for real.


# The seed's own test suite, ported.


async def test_start_and_stop(autojump_clock: Clock, world: World) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        assert "db" in sup
        assert list(sup) == ["db"]
        assert len(sup) == 1
        assert sup["db"] is db
        assert db.name == "db"
        await sup.stop_circuit_breaker("db")
        assert "db" not in sup
        assert db.state is State.STOPPED
        assert world.finally_ran == 1


async def test_run_something(autojump_clock: Clock, world: World) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        assert await db.call("select * from my_table;") == "select * from my_table;"
        assert await db.cast("insert") is None
        assert await db.call("after") == "after"
        assert world.seen == ["select * from my_table;", "insert", "after"]


async def test_several_breakers(autojump_clock: Clock) -> None:
    worlds = {name: World() for name in ("a", "b", "c")}
    async with breaky.open_supervisor() as sup:
        for name, world in worlds.items():
            await sup.start_circuit_breaker(name, service, world)
        assert sorted(sup) == ["a", "b", "c"]
        for name in sup:
            assert await sup[name].call(name) == name
    assert all(w.seen == [n] for n, w in worlds.items())


async def test_crash_and_restart(autojump_clock: Clock, world: World) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        assert db.resource == "conn 1"
        with pytest.raises(breaky.ResourceLost):
            await db.call(("crash", ValueError("boom")))
        assert db.state is State.ON
        assert await db.call("again") == "again"
        assert world.starts == 2
        assert db.resource == "conn 2"


async def test_state(autojump_clock: Clock, world: World) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        assert db.state is State.ON
        await sup.stop_circuit_breaker("db")
        assert db.state is State.STOPPED


async def test_ten_crashes_turn_it_off_and_call_answers_off(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        for _ in range(9):
            with pytest.raises(breaky.ResourceLost):
                await db.call(("crash", ValueError("boom")))
            assert db.state is State.ON
        with pytest.raises(breaky.ResourceLost):
            await db.call(("crash", ValueError("boom")))
        assert db.state is State.OFF
        assert db.resource is OFF
        assert await db.call("anyone?") is OFF
        assert await db.cast("anyone?") is OFF
        assert world.starts == 10


# 1. Failed starts.


async def test_failed_starts_are_retried_at_once_then_off(
    autojump_clock: Clock, world: World
) -> None:
    world.down = True
    async with breaky.open_supervisor() as sup:
        start = trio.current_time()
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=3)
        assert trio.current_time() == start
        assert world.starts == 3
        assert db.state is State.OFF
        assert await db.call("x") is OFF


async def test_first_start_succeeding_after_failures(
    autojump_clock: Clock, world: World
) -> None:
    world.down = True

    async def flaky(inbox: Any, *, task_status: Any) -> None:
        world.down = world.starts < 2
        await service(inbox, world, task_status=task_status)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", flaky, failure_threshold=5)
        assert db.state is State.ON
        assert world.starts == 3
        # Turning ON starts a fresh count: four crashes do not trip it.
        for _ in range(4):
            with pytest.raises(breaky.ResourceLost):
                await db.call(("crash", ValueError()))
        assert db.state is State.ON


async def test_returning_without_started_is_a_failed_start(
    autojump_clock: Clock,
) -> None:
    starts = 0

    async def never_ready(inbox: Any, *, task_status: Any) -> None:
        nonlocal starts
        starts += 1

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", never_ready, failure_threshold=4)
        assert db.state is State.OFF
        assert starts == 4


# 2. Crashes and normal returns.


async def test_a_normal_return_counts_as_a_crash(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=2)
        with pytest.raises(breaky.ResourceLost) as lost:
            await db.call(("return",))
        assert lost.value.__cause__ is None
        assert db.state is State.ON
        with pytest.raises(breaky.ResourceLost):
            await db.call(("return",))
        assert db.state is State.OFF


async def test_a_resource_that_keeps_returning_cannot_spin(
    autojump_clock: Clock,
) -> None:
    starts = 0

    async def quitter(inbox: Any, *, task_status: Any) -> None:
        nonlocal starts
        starts += 1
        task_status.started()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", quitter, failure_threshold=3, retry_timeout=10
        )
        await trio.testing.wait_all_tasks_blocked()
        assert db.state is State.OFF
        assert starts == 3
        await trio.sleep(35)
        # Each retry turns it ON with a fresh count, then it trips again:
        # at most failure_threshold starts per retry period, no spinning.
        assert starts == 3 + 3 * 3


async def test_the_failure_count_never_decays_while_on(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=3)
        for _ in range(2):
            with pytest.raises(breaky.ResourceLost):
                await db.call(("crash", ValueError()))
            await trio.sleep(3600)
        assert db.state is State.ON
        db.failure()
        assert db.state is State.OFF


# 3. failure().


async def test_failure_counts_and_trips_cancelling_the_resource(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=3)
        db.failure()
        db.failure()
        assert db.state is State.ON
        db.failure()
        # The trip is immediate; the resource is cancelled at its next checkpoint.
        assert db.state is State.OFF
        assert db.resource is OFF
        await trio.testing.wait_all_tasks_blocked()
        assert world.finally_ran == 1
        assert world.starts == 1


async def test_failure_is_ignored_while_off_and_stopped(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=1, retry_timeout=10
        )
        db.failure()
        assert db.state is State.OFF
        db.failure()
        await trio.sleep(10)
        await trio.testing.wait_all_tasks_blocked()
        # The retry came at the trip's time + 10 s, not pushed back.
        assert db.state is State.ON
        await sup.stop_circuit_breaker("db")
        db.failure()
        assert db.state is State.STOPPED


async def test_failure_while_the_resource_holds_a_call(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=1)
        async with trio.open_nursery() as nursery:

            async def hold() -> None:
                with pytest.raises(breaky.ResourceLost) as lost:
                    await db.call(("hold",))
                assert lost.value.__cause__ is None

            nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            db.failure()
        assert db.state is State.OFF


# 4. OFF.


async def test_off_answers_at_once_and_retries_every_retry_timeout(
    autojump_clock: Clock,
    world: World,
) -> None:
    world.down = True
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=2, retry_timeout=10
        )
        tripped = trio.current_time()
        assert world.starts == 2
        before = trio.current_time()
        assert await db.call("x") is OFF
        assert trio.current_time() == before
        for n in range(1, 4):
            await trio.sleep_until(tripped + 10 * n - 0.001)
            assert world.starts == 1 + n
            await trio.sleep(0.001)
            await trio.testing.wait_all_tasks_blocked()
            # A failed retry keeps it OFF and re-arms the one timer.
            assert world.starts == 2 + n
            assert db.state is State.OFF
        # The next iteration's first check (or the one below) shows the
        # re-armed timer: nothing is tried before the next boundary.
        world.down = False
        await trio.sleep_until(tripped + 40 - 0.001)
        assert world.starts == 5
        assert db.state is State.OFF
        await trio.sleep(0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert world.starts == 6
        assert db.state is State.ON
        assert db.statistics().failures == 0
        assert await db.call("back") == "back"


async def test_queued_requests_are_answered_off_at_the_trip(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=1)
        answers: list[object] = []
        async with trio.open_nursery() as nursery:

            async def call(message: object) -> None:
                try:
                    answers.append(await db.call(message))
                except Exception as exc:
                    answers.append(type(exc))

            nursery.start_soon(call, ("sleep", 1))
            await trio.testing.wait_all_tasks_blocked()
            for n in range(3):
                nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
            db.failure()
        assert sorted(map(str, answers)) == sorted(
            ["OFF", "OFF", "OFF", str(breaky.ResourceLost)]
        )
        assert world.seen == [("sleep", 1)]


async def test_off_at_once_is_for_new_calls_a_queued_one_waited_until_the_trip(
    autojump_clock: Clock, world: World
) -> None:
    # As the README says: a call queued before the trip is answered OFF when
    # the trip happens, which can be close to its timeout; a new one at once.
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=1, call_timeout=5
        )
        waited: dict[str, float] = {}
        async with trio.open_nursery() as nursery:

            async def call(name: str, message: object) -> None:
                start = trio.current_time()
                with contextlib.suppress(breaky.ResourceLost):
                    assert await db.call(message) is OFF
                waited[name] = trio.current_time() - start

            nursery.start_soon(call, "busy", ("sleep", 10))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, "queued", "x")
            await trio.sleep(4.5)
            db.failure()
            nursery.start_soon(call, "new", "y")
        assert waited == {"busy": 4.5, "queued": 4.5, "new": 0}


# 5. Requests queued through a restart.


async def test_queued_requests_are_served_by_the_next_instance(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        results: dict[int, object] = {}
        async with trio.open_nursery() as nursery:

            async def call(n: int, message: object) -> None:
                try:
                    results[n] = await db.call(message)
                except breaky.ResourceLost:
                    results[n] = "lost"

            nursery.start_soon(call, 0, ("crash", ValueError()))
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 4):
                nursery.start_soon(call, n, n)
        assert results == {0: "lost", 1: 1, 2: 2, 3: 3}
        assert world.starts == 2


async def test_state_stays_on_and_calls_queue_during_a_slow_restart(
    autojump_clock: Clock,
) -> None:
    starts = 0

    async def slow_restart(inbox: Any, *, task_status: Any) -> None:
        nonlocal starts
        starts += 1
        if starts > 1:
            await trio.sleep(3)  # reconnecting
        task_status.started(starts)
        async for request in inbox:
            if request.message == "crash":
                raise ValueError
            request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", slow_restart)
        with pytest.raises(breaky.ResourceLost):
            await db.call("crash")
        assert db.state is State.ON
        assert db.resource is OFF
        before = trio.current_time()
        assert await db.call("queued") == "queued"
        assert trio.current_time() - before == pytest.approx(3)
        assert db.resource == 2


# 6. One answer per call.


async def test_fail_raises_the_resources_exception_in_the_caller(
    autojump_clock: Clock,
    world: World,
) -> None:
    error = LookupError("no such row")
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=1)
        with pytest.raises(LookupError) as raised:
            await db.call(("fail", error))
        assert raised.value is error
        # An error reply is not a failure: breaky leaves that to failure().
        assert db.state is State.ON


async def test_resource_lost_carries_the_resources_own_exception(
    autojump_clock: Clock,
    world: World,
) -> None:
    error = ValueError("boom")
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        with pytest.raises(breaky.ResourceLost) as lost:
            await db.call(("crash", error))
        assert lost.value.__cause__ is error
        assert "'db'" in str(lost.value)


async def test_call_timeout_answers_and_counts_a_failure(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=2, call_timeout=1.0
        )
        before = trio.current_time()
        with pytest.raises(breaky.CallTimeout):
            await db.call(("sleep", 5))
        assert trio.current_time() - before == pytest.approx(1.0)
        assert issubclass(breaky.CallTimeout, trio.TooSlowError)
        assert db.statistics().failures == 1
        with pytest.raises(trio.TooSlowError):
            await db.call(("sleep", 0.5), timeout=0.25)
        assert db.state is State.OFF


async def test_the_calls_own_timeout_and_none(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, call_timeout=1.0)
        assert await db.call(("sleep", 3), timeout=4) == 3
        assert await db.call(("sleep", 300), timeout=None) == 300
        assert db.statistics().failures == 0


async def test_a_timeout_while_queued_counts_and_withdraws(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, call_timeout=None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.call, ("sleep", 10))
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(breaky.CallTimeout):
                await db.call("queued", timeout=1)
        assert db.statistics().failures == 1
        assert world.seen == [("sleep", 10)]


async def test_many_deadlines_all_answered_in_order(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=1000, call_timeout=None
        )
        timed_out: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.call, ("hold",))
            await trio.testing.wait_all_tasks_blocked()

            async def call(n: int) -> None:
                with pytest.raises(breaky.CallTimeout):
                    await db.call(n, timeout=n)
                timed_out.append(n)

            for n in (50, 10, 30, 20, 40) * 30:
                nursery.start_soon(call, n)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        assert timed_out == sorted(timed_out)
        assert len(timed_out) == 150


# 7. Cancelled callers.


async def test_a_caller_cancelled_while_queued_withdraws_its_request(
    autojump_clock: Clock,
    world: World,
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, call_timeout=None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.call, ("sleep", 10))
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(1):
                await db.call("withdrawn")
        assert await db.call("next") == "next"
        assert world.seen == [("sleep", 10), "next"]
        assert db.statistics().failures == 0


async def test_a_caller_cancelled_after_the_resource_took_it(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        with trio.move_on_after(1) as scope:
            await db.call(("sleep", 2))
        assert scope.cancelled_caught
        await trio.sleep(2)
        # The late reply was dropped without error; the resource serves on.
        assert await db.call("next") == "next"
        assert db.statistics().failures == 0
        assert world.starts == 1


async def test_an_already_cancelled_caller_never_queues(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        with trio.CancelScope() as scope:
            scope.cancel()
            await db.call("never")
        with trio.CancelScope() as scope:
            scope.cancel()
            await db.cast("never")
        assert await db.call("seen") == "seen"
        assert world.seen == ["seen"]


# 8. Stopping.


async def test_stop_closes_the_inbox_and_answers_queued_off(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        answers: list[object] = []
        async with trio.open_nursery() as nursery:

            async def call(message: object) -> None:
                answers.append(await db.call(message))

            nursery.start_soon(call, ("sleep", 1))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, "queued")
            await trio.testing.wait_all_tasks_blocked()
            await sup.stop_circuit_breaker("db")
        # The call in progress was finished gracefully; the queued one got OFF.
        assert answers == [OFF, 1]
        assert world.finally_ran == 1
        assert await db.call("late") is OFF
        assert await db.cast("late") is OFF
        assert db.resource is OFF


async def test_a_stopped_name_can_be_reused(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        first = await sup.start_circuit_breaker("db", service, world)
        await sup.stop_circuit_breaker("db")
        second = await sup.start_circuit_breaker("db", service, world)
        assert second is not first
        assert sup["db"] is second
        assert await second.call(1) == 1


async def test_a_lingering_resource_is_cancelled_after_shutdown_timeout(
    autojump_clock: Clock,
) -> None:
    cancelled_at: list[float] = []

    async def stubborn(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()  # never reads its inbox
        finally:
            cancelled_at.append(trio.current_time())

    async with breaky.open_supervisor(shutdown_timeout=3) as sup:
        await sup.start_circuit_breaker("db", stubborn)
        start = trio.current_time()
    assert cancelled_at == [start + 3]


async def test_leaving_the_block_leaves_no_task_running(
    autojump_clock: Clock, world: World
) -> None:
    before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    async with breaky.open_supervisor() as sup:
        for name in "abc":
            await sup.start_circuit_breaker(name, service, world)
        await sup.start_circuit_breaker("off", service, World(down=True))
    after = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    assert before == after
    assert world.finally_ran == 3
    with pytest.raises(RuntimeError, match="closed"):
        await sup.start_circuit_breaker("late", service, world)


async def test_stopping_an_unknown_name_is_a_key_error(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", service, World())
        with pytest.raises(KeyError, match=r"'nope'.*\['db'\]"):
            await sup.stop_circuit_breaker("nope")
        with pytest.raises(KeyError, match=r"'nope'.*\['db'\]"):
            sup["nope"]


# 9. What comes out of the supervisor.


async def test_an_error_in_the_block_comes_out_as_itself(
    autojump_clock: Clock, world: World
) -> None:
    error = ValueError("mine")
    with pytest.raises(ValueError, match="mine") as raised:  # noqa: PT012
        async with breaky.open_supervisor() as sup:
            await sup.start_circuit_breaker("db", service, world)
            raise error
    assert raised.value is error
    assert world.finally_ran == 1


async def test_resource_errors_never_come_out(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=2)
        for _ in range(2):
            with pytest.raises(breaky.ResourceLost):
                await db.call(("crash", RuntimeError("inside")))
    assert db.state is State.STOPPED


async def test_resource_error_groups_during_cancellation_stay_inside(
    autojump_clock: Clock,
) -> None:
    async def messy(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("while being cancelled")

    with trio.move_on_after(1) as scope:
        async with breaky.open_supervisor(shutdown_timeout=10) as sup:
            await sup.start_circuit_breaker("db", messy)
            await trio.sleep_forever()
    assert scope.cancelled_caught


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_keyboard_interrupt_and_system_exit_come_out(
    autojump_clock: Clock,
    exc_type: type[BaseException],
) -> None:
    async def fatal(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        async for _ in inbox:
            raise exc_type

    with pytest.RaisesGroup(exc_type, flatten_subgroups=True):
        async with breaky.open_supervisor() as sup:
            db = await sup.start_circuit_breaker("db", fatal)
            await db.cast("go")
            await trio.sleep_forever()


# 10. Checkpoints.


async def test_every_public_async_method_is_a_checkpoint(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        with trio.testing.assert_checkpoints():
            db = await sup.start_circuit_breaker("db", service, world)
        with trio.testing.assert_checkpoints():
            await db.call(1)
        with trio.testing.assert_checkpoints():
            await db.cast(1)
        with trio.testing.assert_checkpoints():
            await sup.stop_circuit_breaker("db")
        with trio.testing.assert_checkpoints():
            assert await db.call(1) is OFF
        with trio.testing.assert_checkpoints():
            assert await db.cast(1) is OFF


async def test_a_loop_calling_an_off_breaker_lets_others_run(
    autojump_clock: Clock, world: World
) -> None:
    world.down = True
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, failure_threshold=1)
        ran = trio.Event()

        async def run() -> None:
            ran.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            while not ran.is_set():
                assert await db.call("x") is OFF


async def test_the_inbox_lets_others_run_while_serving_a_backlog(
    autojump_clock: Clock,
) -> None:
    async def greedy(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        async for request in inbox:
            request.reply(None)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", greedy)
        for n in range(100):
            await db.cast(n)
        with trio.testing.assert_checkpoints():
            await db.call("last")


# 11. Logging.


async def test_logging_names_the_breaker(
    autojump_clock: Clock, world: World, log_records: Any
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=2, retry_timeout=1
        )
        world.down = True
        with pytest.raises(breaky.ResourceLost):
            await db.call("crash it")
        await trio.testing.wait_all_tasks_blocked()
        assert db.state is State.OFF
        world.down = False
        await trio.sleep(1.5)
    assert log_records() == [
        "breaker 'db' is ON (the resource started)",
        "breaker 'db': the resource crashed",
        "breaker 'db': the resource failed to start",
        (
            "breaker 'db' turned OFF after 2 failures "
            "(last: the resource failed to start); next start in 1 s"
        ),
        "breaker 'db' is OFF: trying to start the resource",  # DEBUG
        "breaker 'db' is ON (the resource started), after 1 s OFF and 1 attempt",
        "breaker 'db' stopped",
    ]


async def test_crash_records_carry_the_traceback_and_extra(
    autojump_clock: Clock, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    error = ValueError("boom")
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world)
        with pytest.raises(breaky.ResourceLost):
            await db.call(("crash", error))
    [crash] = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert crash.levelno == logging.ERROR
    assert crash.exc_info is not None
    assert crash.exc_info[1] is error
    assert crash.breaker == "db"  # type: ignore[attr-defined]
    assert crash.state == "on"  # type: ignore[attr-defined]


# 12. Nested supervisors.


async def test_a_supervisor_inside_a_resource(
    autojump_clock: Clock, world: World
) -> None:
    async def pool(inbox: Any, *, task_status: Any) -> None:
        async with breaky.open_supervisor() as inner:
            worker = await inner.start_circuit_breaker("worker", service, world)
            task_status.started(inner)
            async for request in inbox:
                request.reply(await worker.call(request.message))

    async with breaky.open_supervisor() as sup:
        outer = await sup.start_circuit_breaker("pool", pool)
        assert await outer.call("deep") == "deep"
        inner = outer.resource
        worker = inner["worker"]
        await sup.stop_circuit_breaker("pool")
        assert worker.state is State.STOPPED
        assert world.finally_ran == 1


# 13. Precise points.


async def test_the_first_start_runs_in_the_supervisors_nursery(
    autojump_clock: Clock, world: World
) -> None:
    seen: list[trio.Nursery | None] = []

    async def where(inbox: Any, *, task_status: Any) -> None:
        seen.append(trio.lowlevel.current_task().parent_nursery)
        task_status.started()
        async for _ in inbox:
            pass

    async with breaky.open_supervisor() as sup:
        async with trio.open_nursery() as callers:
            callers.start_soon(sup.start_circuit_breaker, "db", where)
        assert seen[0] is not callers
        # The supervisor's nursery is the one its opener's task opened.
        assert seen[0] is not None
        assert seen[0].parent_task is trio.lowlevel.current_task()


async def test_a_cancelled_start_leaves_nothing_registered(
    autojump_clock: Clock,
) -> None:
    finally_ran = trio.Event()

    async def slow(inbox: Any, *, task_status: Any) -> None:
        try:
            await trio.sleep(100)
            task_status.started()
        finally:
            finally_ran.set()

    async with breaky.open_supervisor() as sup:
        with trio.move_on_after(1):
            await sup.start_circuit_breaker("db", slow)
        assert "db" not in sup
        await finally_ran.wait()
        assert trio.current_time() == pytest.approx(1)
        # The name is free again.
        await sup.start_circuit_breaker("db", service, World())


async def test_started_twice_is_an_error(autojump_clock: Clock) -> None:
    errors: list[Exception] = []

    async def twice(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        try:
            task_status.started()
        except RuntimeError as exc:
            errors.append(exc)
        async for _ in inbox:
            pass

    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", twice)
    assert "already" in str(errors[0])


async def test_start_waits_until_the_first_start_settles(autojump_clock: Clock) -> None:
    async def slow(inbox: Any, *, task_status: Any) -> None:
        await trio.sleep(7)
        task_status.started("ready")
        async for _ in inbox:
            pass

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", slow)
        assert trio.current_time() == pytest.approx(7)
        assert db.state is State.ON
        assert db.resource == "ready"


async def test_calls_during_the_first_start_wait_for_it(autojump_clock: Clock) -> None:
    async def slow(inbox: Any, *, task_status: Any) -> None:
        await trio.sleep(2)
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor() as sup, trio.open_nursery() as nursery:
        nursery.start_soon(sup.start_circuit_breaker, "db", slow)
        await trio.testing.wait_all_tasks_blocked()
        db = sup["db"]
        assert db.state is State.STARTING
        assert await db.call("early") == "early"


async def test_several_tasks_can_serve_one_inbox(autojump_clock: Clock) -> None:
    served: dict[int, int] = {}

    async def pool(inbox: Any, *, task_status: Any) -> None:
        async def worker(n: int) -> None:
            async for request in inbox:
                await trio.sleep(1)
                served[n] = served.get(n, 0) + 1
                request.reply(n)

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(worker, n)
            task_status.started()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", pool)
        async with trio.open_nursery() as nursery:
            for _ in range(9):
                nursery.start_soon(db.call, None)
        assert trio.current_time() == pytest.approx(3)
        assert served == {0: 3, 1: 3, 2: 3}


def test_off_is_a_falsy_singleton_with_a_clear_repr() -> None:
    assert repr(OFF) == "breaky.OFF"
    assert str(OFF) == "OFF"
    assert not OFF
    assert breaky.OffType.OFF is OFF


async def test_a_late_start_of_a_dismissed_instance_is_ignored(
    autojump_clock: Clock,
) -> None:
    starts = 0

    async def shielded_reconnect(inbox: Any, *, task_status: Any) -> None:
        nonlocal starts
        starts += 1
        if starts > 1:
            with trio.CancelScope(shield=True):
                await trio.sleep(10)  # a connect that ignores cancellation
        task_status.started(starts)
        async for request in inbox:
            raise ValueError(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", shielded_reconnect, failure_threshold=2, retry_timeout=100
        )
        with pytest.raises(breaky.ResourceLost):
            await db.call("crash")
        # The restart is connecting; a call times out: the second failure.
        with pytest.raises(breaky.CallTimeout):
            await db.call("queued", timeout=1)
        assert db.state is State.OFF
        await trio.sleep(20)
        # The dismissed instance called started() at t=10: it changes nothing.
        assert db.state is State.OFF
        assert db.resource is OFF
        assert starts == 2


async def test_answered_deadlines_do_not_pile_up(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, call_timeout=3600)
        for n in range(1000):
            assert await db.call(n) == n
        # An internals test: the deadlines kept have no public view, and what
        # is checked is their memory, not behaviour.
        assert inside(db).deadlines <= 70


async def test_a_breaker_stopped_before_its_tasks_ran(autojump_clock: Clock) -> None:
    async def slow(inbox: Any, *, task_status: Any) -> None:
        await trio.sleep(1)
        task_status.started()

    async with breaky.open_supervisor() as sup:
        with trio.CancelScope() as scope:
            scope.cancel()
            await sup.start_circuit_breaker("db", slow)
        assert "db" not in sup
    assert scope.cancelled_caught


async def test_a_start_cancelled_while_its_name_was_stopped(
    autojump_clock: Clock,
) -> None:
    async def slow(inbox: Any, *, task_status: Any) -> None:
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.start_circuit_breaker, "db", slow)
            await trio.testing.wait_all_tasks_blocked()
            first = sup["db"]
            # Cancellation reaches the waiting start, then the name is stopped
            # and reused before the start runs again: it must not remove the
            # new breaker.
            nursery.cancel_scope.cancel()
            await sup.stop_circuit_breaker("db")
        second = await sup.start_circuit_breaker("db", service, World())
        assert sup["db"] is second
        assert first.state is State.STOPPED


async def test_answering_a_request_whose_caller_left_is_dropped(
    autojump_clock: Clock,
) -> None:
    answered: list[str] = []

    async def slow(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        async for request in inbox:
            await trio.sleep(2)
            if request.message == "reply":
                request.reply("late")
            else:
                request.fail(ValueError("late"))
            answered.append(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", slow)
        # Each caller leaves after the resource took its request (at 0 and
        # at 2) and before it answers (at 2 and at 4).
        with trio.move_on_after(1):
            await db.call("reply")
        with trio.move_on_after(2.5):
            await db.call("fail")
        await trio.sleep(5)
        assert answered == ["reply", "fail"]
        assert db.state is State.ON


async def test_reprs_say_what_they_are(autojump_clock: Clock) -> None:
    inboxes: list[breaky.Inbox[Any, Any]] = []

    async def keeps_its_inbox(
        inbox: breaky.Inbox[Any, Any], *, task_status: Any
    ) -> None:
        inboxes.append(inbox)
        task_status.started()
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", keeps_its_inbox)
        assert repr(db) == "<breaky.CircuitBreaker 'db' ON>"
        assert repr(sup) == "<breaky.Supervisor open, breakers: ['db']>"
        assert repr(inboxes[0]) == "<breaky.Inbox of 'db': 0 queued>"
        assert "<from the policy>" in repr(inspect.signature(db.call))
    assert repr(sup) == "<breaky.Supervisor closed, breakers: []>"


async def test_a_woken_task_of_a_crashing_instance_leaves_the_request_queued(
    autojump_clock: Clock,
) -> None:
    # Found in review: a receiver woken for a request, then cancelled by its
    # instance's crash before it ran, took the request anyway. Which of the
    # two runs first is random in Trio, hence the rounds.
    for _ in range(20):
        taken_while_crashing = 0
        instances = 0
        go = trio.Event()

        async def resource(inbox: Any, *, task_status: Any) -> None:
            nonlocal instances
            instances += 1
            first = instances == 1
            crashing = False

            async def worker() -> None:
                nonlocal taken_while_crashing
                async for request in inbox:
                    taken_while_crashing += crashing
                    await trio.sleep(0.1)
                    request.reply("ok")

            async def crasher() -> None:
                nonlocal crashing
                if first:
                    await go.wait()  # noqa: B023 - this round's event
                    crashing = True
                    raise ValueError

            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
                nursery.start_soon(crasher)

        async with breaky.open_supervisor() as sup:
            db = await sup.start_circuit_breaker("db", resource, failure_threshold=5)
            await trio.sleep(1)
            go.set()
            # Taken before the crash (lost with it), or served by the next
            # instance; never taken by the crashing one.
            with contextlib.suppress(breaky.ResourceLost):
                assert await db.call("x") == "ok"
        assert taken_while_crashing == 0


async def test_a_stale_task_status_cannot_turn_the_breaker_on(
    autojump_clock: Clock,
) -> None:
    stash: list[Any] = []

    async def resource(inbox: Any, *, task_status: Any) -> None:
        if not stash:
            stash.append(task_status)
            raise ConnectionError  # the first start fails
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup, trio.open_nursery() as nursery:
        nursery.start_soon(sup.start_circuit_breaker, "db", resource)
        await trio.sleep(1)
        db = sup["db"]
        with pytest.raises(RuntimeError, match="has ended"):
            stash[0].started("stale")
        assert db.state is State.STARTING
        assert db.resource is OFF
        nursery.cancel_scope.cancel()


async def test_a_start_cancelled_as_it_settled_keeps_the_breaker(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        with trio.CancelScope() as scope:

            async def ready_as_cancelled(inbox: Any, *, task_status: Any) -> None:
                scope.cancel()  # the waiting caller is cancelled, and then
                task_status.started()  # the start settles, in the same step
                async for request in inbox:
                    request.reply(request.message)

            await sup.start_circuit_breaker("db", ready_as_cancelled)
        # Like nursery.start: a task that called started() keeps running.
        assert scope.cancelled_caught
        assert await sup["db"].call("still here") == "still here"


async def test_an_error_beside_an_outside_cancellation_is_logged(
    autojump_clock: Clock, log_records: Any
) -> None:
    async def messy(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("while being cancelled")

    with trio.move_on_after(1):
        async with breaky.open_supervisor() as sup:
            await sup.start_circuit_breaker("db", messy)
            await trio.sleep_forever()
    assert "breaker 'db': the resource crashed" in log_records()


async def test_a_call_cancelled_while_answered_off_counts_as_cancelled(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(down=True))
        with trio.CancelScope() as scope:
            scope.cancel()
            await db.call("x")
        stats = db.statistics()
        assert (stats.calls, stats.cancelled, stats.off) == (1, 1, 0)


async def test_a_woken_worker_cancelled_alone_passes_the_request_on(
    autojump_clock: Clock,
) -> None:
    served_by: list[str] = []
    scopes: dict[str, trio.CancelScope] = {}

    async def two_workers(inbox: Any, *, task_status: Any) -> None:
        async def worker(name: str) -> None:
            with trio.CancelScope() as scopes[name]:
                async for request in inbox:
                    served_by.append(name)
                    request.reply(name)

        task_status.started()  # before any worker reads the inbox
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "a")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(worker, "b")
            await trio.testing.wait_all_tasks_blocked()
            both_parked.set()

    # Not wait_all_tasks_blocked() in the test too: both waiters would wake
    # at once, and the cast could come before worker b parks.
    both_parked = trio.Event()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", two_workers)
        await both_parked.wait()
        await db.cast("x")  # wakes worker a, the first to park...
        scopes["a"].cancel()  # ...which is cancelled before it runs
        await trio.testing.wait_all_tasks_blocked()
        assert served_by == ["b"]
        assert db.state is State.ON
