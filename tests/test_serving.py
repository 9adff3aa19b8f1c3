"""Serving real load: the inbox as a channel, serve(), shedding, start timeouts."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import pytest
import trio
import trio.testing
from support import answered_calls

import breaky
from breaky import OFF, State

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

Clock = trio.testing.MockClock


# The inbox is a trio ReceiveChannel.


async def test_the_inbox_is_a_trio_receive_channel(autojump_clock: Clock) -> None:
    inboxes: list[breaky.Inbox[Any, Any]] = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        inboxes.append(inbox)
        task_status.started()
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        (inbox,) = inboxes
        assert isinstance(inbox, trio.abc.ReceiveChannel)
        with pytest.raises(trio.WouldBlock):
            inbox.receive_nowait()
        await db.cast("a")
        await db.cast("b")
        assert repr(inbox) == "<breaky.Inbox of 'db': 2 queued>"
        assert inbox.receive_nowait().message == "a"
        with trio.testing.assert_checkpoints():
            assert (await inbox.receive()).message == "b"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.cast, "c")
            with trio.testing.assert_checkpoints():
                assert (await inbox.receive()).message == "c"


async def test_receive_ends_when_the_breaker_stops(autojump_clock: Clock) -> None:
    ended: list[str] = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await inbox.receive()
        except trio.EndOfChannel:
            ended.append("receive")
        with pytest.raises(trio.EndOfChannel):
            inbox.receive_nowait()
        ended.append("receive_nowait")

    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", resource)
        await trio.testing.wait_all_tasks_blocked()
        await sup.stop_circuit_breaker("db")
    assert ended == ["receive", "receive_nowait"]


async def test_closing_the_inbox_loses_no_queued_request(autojump_clock: Clock) -> None:
    """The next instance gets an open inbox and the requests still queued."""
    served: list[tuple[int, str]] = []
    instances = 0

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        nonlocal instances
        instances += 1
        me = instances
        task_status.started()
        async with inbox:
            request = await inbox.receive()
            served.append((me, request.message))
            request.reply(me)
        # Closed: this handle takes nothing more; using it is a bug.
        with pytest.raises(trio.ClosedResourceError):
            inbox.receive_nowait()
        with pytest.raises(trio.ClosedResourceError):
            await inbox.receive()
        await inbox.aclose()  # closing twice is fine, as for any channel
        raise ConnectionResetError  # and the instance crashes

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        async with trio.open_nursery() as nursery:
            for message in ("a", "b", "c"):
                nursery.start_soon(db.call, message)
                await trio.testing.wait_all_tasks_blocked()
    assert served == [(1, "a"), (2, "b"), (3, "c")]
    assert db.statistics().crashes == 3


async def test_closing_wakes_a_task_parked_in_receive(autojump_clock: Clock) -> None:
    seen: list[str] = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async with trio.open_nursery() as nursery:

            async def parked() -> None:
                try:
                    await inbox.receive()
                except trio.ClosedResourceError:
                    seen.append("closed")

            nursery.start_soon(parked)
            await trio.testing.wait_all_tasks_blocked()
            await inbox.aclose()
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        await trio.sleep(1)
        assert seen == ["closed"]
        # Nothing takes requests now; they wait for a next instance.
        with trio.move_on_after(1):
            await db.call("x", timeout=None)
        assert db.statistics().cancelled == 1


async def test_closing_as_a_parked_task_is_woken_keeps_its_request(
    autojump_clock: Clock,
) -> None:
    inboxes: list[breaky.Inbox[Any, Any]] = []
    outcomes: list[str] = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        inboxes.append(inbox)
        task_status.started()
        if len(inboxes) == 1:
            try:
                await inbox.receive()
            except trio.ClosedResourceError:
                outcomes.append("closed")
            await trio.sleep(1)
            raise ConnectionResetError
        async for request in inbox:
            outcomes.append(request.message)
            request.reply(None)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        await trio.testing.wait_all_tasks_blocked()
        await db.cast("x")  # wakes the parked task...
        await inboxes[0].aclose()  # ...which finds its inbox closed when it runs
        await trio.sleep(2)
    assert outcomes == ["closed", "x"]


async def test_an_ended_instance_inbox_takes_nothing(autojump_clock: Clock) -> None:
    """A task that outlives its instance cannot steal the next one's requests."""
    inboxes: list[breaky.Inbox[Any, Any]] = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        inboxes.append(inbox)
        task_status.started()
        if len(inboxes) == 1:
            raise ConnectionResetError
        async for request in inbox:
            request.reply(len(inboxes))

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        await trio.testing.wait_all_tasks_blocked()
        first = inboxes[0]
        with pytest.raises(trio.EndOfChannel):
            await first.receive()
        assert await db.call("x") == 2


async def test_a_task_parked_on_an_instance_that_ends_is_released(
    autojump_clock: Clock,
) -> None:
    """A receiver outside the instance's scope is woken with EndOfChannel."""
    outcomes: list[str] = []

    async def leaked_receiver(inbox):
        try:
            await inbox.receive()
        except trio.EndOfChannel:
            outcomes.append("ended")

    async with trio.open_nursery() as outside, breaky.open_supervisor() as sup:

        async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
            outside.start_soon(leaked_receiver, inbox)
            task_status.started()
            await trio.testing.wait_all_tasks_blocked()
            raise ConnectionResetError

        await sup.start_circuit_breaker("db", resource, failure_threshold=1)
        await trio.testing.wait_all_tasks_blocked()
    assert outcomes == ["ended"]


# Serving with handlers.


async def test_serve_runs_up_to_concurrency_handlers_at_once(
    autojump_clock: Clock,
) -> None:
    running = peak = 0

    async def handler(request: breaky.Request[float, str]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(request.message)
        running -= 1
        request.reply("done")

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await inbox.serve(handler, concurrency=4)

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker("api", resource)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(api.call, 1.0)
        # 12 one-second calls, four at a time: three seconds.
        assert trio.current_time() - start == pytest.approx(3.0)
        stats = api.statistics()
    assert peak == 4
    assert stats.replies == 12


async def test_serve_returns_when_the_breaker_stops_after_in_flight_work(
    autojump_clock: Clock,
) -> None:
    log: list[str] = []

    async def handler(request: breaky.Request[str, str]) -> None:
        await trio.sleep(1)
        log.append(request.message)
        request.reply(request.message)

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await inbox.serve(handler, concurrency=2)
        log.append("serve returned")

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker("api", resource)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(api.call, "a")
            nursery.start_soon(api.call, "b")
            await trio.testing.wait_all_tasks_blocked()
            await sup.stop_circuit_breaker("api")
    assert sorted(log[:2]) == ["a", "b"]
    assert log[2:] == ["serve returned"]
    stats = api.statistics()
    assert stats.replies == 2
    assert stats.crashes == 0


async def test_a_handler_error_crashes_the_instance_and_others_are_lost(
    autojump_clock: Clock,
) -> None:
    errors: list[BaseException] = []

    async def handler(request: breaky.Request[str, str]) -> None:
        if request.message == "boom":
            await trio.sleep(0.5)
            raise ConnectionResetError(request.message)
        await trio.sleep_forever()

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await inbox.serve(handler, concurrency=3)
        except BaseException as exc:
            errors.append(exc)
            raise

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker("api", resource)
        outcomes: list[object] = []

        async def call(message: str) -> None:
            try:
                outcomes.append(await api.call(message))
            except Exception as exc:
                outcomes.append(type(exc))

        async with trio.open_nursery() as nursery:
            for message in ("slow", "slow", "boom"):
                nursery.start_soon(call, message)
    # The handler's error comes out of serve() as itself: a plain crash.
    assert [type(e) for e in errors] == [ConnectionResetError]
    assert sorted(map(str, outcomes)) == sorted(map(str, [breaky.ResourceLost] * 3))
    stats = api.statistics()
    assert stats.crashes == 1
    assert stats.lost == 3


async def test_handlers_failing_together_come_out_as_a_group(
    autojump_clock: Clock,
) -> None:
    errors: list[BaseException] = []

    go = trio.Event()

    async def handler(request: breaky.Request[str, str]) -> None:
        await go.wait()  # both wake in the same scheduler batch
        raise ValueError(request.message)

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await inbox.serve(handler, concurrency=2)
        except BaseException as exc:
            errors.append(exc)
            raise

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker("api", resource)
        await api.cast("x")
        await api.cast("y")
        await trio.testing.wait_all_tasks_blocked()
        go.set()
        await trio.sleep(1)
        assert api.statistics().crashes == 1
    (group,) = errors
    assert isinstance(group, ExceptionGroup)
    assert group.message == "2 handlers of breaker 'api' raised"
    assert sorted(str(e) for e in group.exceptions) == ["x", "y"]


async def test_serve_accepts_a_functools_wrapped_async_handler(
    autojump_clock: Clock,
) -> None:
    async def handler(request: breaky.Request[str, str]) -> None:
        request.reply(request.message.upper())

    @functools.wraps(handler)
    def wrapped(request: breaky.Request[str, str]) -> Any:
        return handler(request)

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await inbox.serve(wrapped)

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker("api", resource)
        assert await api.call("hi") == "HI"


# Load shedding.


async def sleepy(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
    """Answers each request after 10 ms, 8 at a time."""
    task_status.started()

    async def handler(request: breaky.Request[Any, Any]) -> None:
        await trio.sleep(0.01)
        request.reply(request.message)

    await inbox.serve(handler, concurrency=8)


async def test_calls_beyond_max_queued_are_shed_and_never_run(
    autojump_clock: Clock,
) -> None:
    seen: list[object] = []

    async def holder(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()  # takes nothing: everything stays queued

    policy = breaky.Policy(max_queued=3, call_timeout=None)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", holder, policy=policy)
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(db.call, n)
            await trio.testing.wait_all_tasks_blocked()
            with trio.testing.assert_checkpoints():
                assert await db.call("shed") is OFF
            assert await db.cast("shed too") is OFF
            stats = db.statistics()
            assert stats.shed == 1
            assert stats.off == 0
            assert stats.pending == 3
            assert stats.failures == 0
            assert db.state is State.ON
            nursery.cancel_scope.cancel()
        assert seen == []
        stats = db.statistics()
        assert stats.calls == answered_calls(stats) == 4
        assert stats.casts == 0


async def test_a_withdrawn_or_timed_out_call_frees_its_place(
    autojump_clock: Clock,
) -> None:
    async def holder(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()

    policy = breaky.Policy(max_queued=1, failure_threshold=100)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", holder, policy=policy)
        with trio.move_on_after(1):
            await db.call("withdrawn", timeout=None)
        with pytest.raises(breaky.CallTimeout):
            await db.call("times out", timeout=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(db.call, "queued", timeout=None))
            await trio.testing.wait_all_tasks_blocked()
            assert await db.call("shed") is OFF
            nursery.cancel_scope.cancel()
        stats = db.statistics()
    assert (stats.cancelled, stats.timeouts, stats.shed) == (2, 1, 1)


async def test_overload_is_shed_and_never_trips_a_healthy_resource(
    autojump_clock: Clock,
) -> None:
    """2,000 callers at once on a resource that answers every call in 10 ms."""
    answers: dict[str, int] = {"reply": 0, "off": 0}
    policy = breaky.Policy(max_queued=100)  # default threshold and call timeout

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker("api", sleepy, policy=policy)
        changes = api.subscribe()

        async def call(n: int) -> None:
            answer = await api.call(n)
            answers["off" if answer is OFF else "reply"] += 1

        async with trio.open_nursery() as nursery:
            for n in range(2_000):
                nursery.start_soon(call, n)
        stats = api.statistics()
        assert api.state is State.ON
        with pytest.raises(trio.WouldBlock):
            changes.receive_nowait()
    assert answers["reply"] + answers["off"] == 2_000
    assert stats.replies == answers["reply"] >= 100
    assert stats.shed == answers["off"] > 0
    assert (stats.timeouts, stats.failures, stats.trips, stats.off) == (0, 0, 0, 0)
    assert stats.calls == answered_calls(stats)


async def test_shed_answers_are_counted_apart_from_off_ones(
    autojump_clock: Clock,
) -> None:
    async def holder(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", holder, policy=breaky.Policy(max_queued=1, call_timeout=None)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.call, "queued")
            await trio.testing.wait_all_tasks_blocked()
            assert await db.call("shed") is OFF
            db.force_off()
            assert await db.call("off") is OFF
        stats = db.statistics()
    assert (stats.shed, stats.off) == (1, 2)  # the queued call was answered OFF


async def test_a_shed_call_cancelled_at_its_checkpoint_counts_as_cancelled(
    autojump_clock: Clock,
) -> None:
    async def holder(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", holder, policy=breaky.Policy(max_queued=1, call_timeout=None)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.call, "queued")
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await db.call("shed")
            nursery.cancel_scope.cancel()
        stats = db.statistics()
    assert (stats.shed, stats.cancelled) == (0, 2)


# Start timeouts.


async def test_a_start_that_hangs_is_a_failed_start_after_start_timeout(
    autojump_clock: Clock, log_records
) -> None:
    attempts: list[float] = []

    async def frozen(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        attempts.append(trio.current_time())
        await trio.sleep_forever()  # the health check never answers

    policy = breaky.Policy(start_timeout=2, failure_threshold=3, retry_timeout=10)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", frozen, policy=policy)
        assert db.state is State.OFF
        assert attempts == [0, 2, 4]
        await trio.sleep(12.5)  # the retry at 16 also gives up at 18
        assert attempts == [0, 2, 4, 16]
        await trio.sleep(6)
        stats = db.statistics()
    assert stats.failed_starts == 4
    assert stats.retries == 1
    assert (
        "breaker 'db': the resource did not start within start_timeout (2 s)"
        in log_records()
    )


async def test_start_timeout_ends_at_started(autojump_clock: Clock) -> None:
    async def slow_then_serving(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        await trio.sleep(1.5)
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", slow_then_serving, policy=breaky.Policy(start_timeout=2)
        )
        await trio.sleep(60)  # long past the start timeout: still serving
        assert await db.call("x") == "x"
        stats = db.statistics()
    assert (stats.failed_starts, stats.crashes) == (0, 0)


async def test_a_dismissed_start_is_not_a_timed_out_one(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def frozen(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        await trio.sleep_forever()

    caplog.set_level(logging.INFO, logger="breaky")
    async with breaky.open_supervisor() as sup:
        with trio.move_on_after(1):
            await sup.start_circuit_breaker(
                "db", frozen, policy=breaky.Policy(start_timeout=5)
            )
        assert "db" not in sup
    assert not any("start_timeout" in r.getMessage() for r in caplog.records)


async def test_reading_the_inbox_before_started_is_a_failed_start(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def eager(inbox: breaky.Inbox[str, str], *, task_status: Any) -> None:
        async for request in inbox:  # forgot task_status.started()
            request.reply(request.message)

    async def batching(inbox: breaky.Inbox[str, str], *, task_status: Any) -> None:
        inbox.receive_nowait()

    async with breaky.open_supervisor() as sup:
        for name, fn in (("eager", eager), ("batching", batching)):
            db = await sup.start_circuit_breaker(name, fn, failure_threshold=2)
            assert db.state is State.OFF
            assert db.statistics().failed_starts == 2
    [first, *_] = [r for r in caplog.records if "eager" in r.getMessage()]
    assert first.exc_info is not None
    assert "call task_status.started() first" in str(first.exc_info[1])


async def test_a_start_timeout_of_none_waits_as_long_as_it_takes(
    autojump_clock: Clock,
) -> None:
    async def slow(inbox: breaky.Inbox[str, str], *, task_status: Any) -> None:
        await trio.sleep(3600)
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", slow, start_timeout=None)
        assert db.state is State.ON
        assert trio.current_time() >= 3600


async def test_a_failed_cast_counts_when_its_error_counts(
    autojump_clock: Clock,
) -> None:
    async def fails(inbox: breaky.Inbox[str, str], *, task_status: Any) -> None:
        task_status.started()
        async for request in inbox:
            request.fail(ConnectionError(request.message))

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", fails, failure_threshold=1, failure_exceptions=ConnectionError
        )
        assert await db.cast("x") is None
        await trio.testing.wait_all_tasks_blocked()
        assert db.state is State.OFF
