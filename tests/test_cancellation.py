"""Cancellation at every step of a call, and shutdown under load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from support import World, service

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock


@attrs.define
class Control:
    """Lets a test hold the resource at each step of a call."""

    seen: list[Any] = attrs.Factory(list)
    taken: trio.Event = attrs.Factory(trio.Event)
    answer: trio.Event = attrs.Factory(trio.Event)
    release: trio.Event = attrs.Factory(trio.Event)
    cancel_on_reply: trio.CancelScope | None = None


async def controlled(inbox: Any, ctl: Control, *, task_status: Any) -> None:
    task_status.started()
    async for request in inbox:
        ctl.seen.append(request.message)
        if request.message == "busy":
            await ctl.release.wait()
            request.reply("busy")
            continue
        ctl.taken.set()
        await ctl.answer.wait()
        request.reply(request.message)
        if ctl.cancel_on_reply is not None:
            ctl.cancel_on_reply.cancel()  # before the caller even runs again


@pytest.mark.parametrize("where", ["before queueing", "queued", "taken", "replied"])
async def test_a_caller_cancelled_at_each_step(
    autojump_clock: Clock, where: str
) -> None:
    ctl = Control()
    async with breaky.open_supervisor() as sup, trio.open_nursery() as nursery:
        db = await sup.start_circuit_breaker("db", controlled, ctl, call_timeout=None)
        got: list[object] = []
        if where == "queued":
            nursery.start_soon(db.call, "busy")  # the resource is busy with it
            await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            if where == "before queueing":
                scope.cancel()
            if where == "replied":
                ctl.cancel_on_reply = scope
            async with trio.open_nursery() as steps:

                async def when_taken() -> None:
                    await ctl.taken.wait()
                    if where == "taken":
                        scope.cancel()
                    ctl.answer.set()

                async def when_queued() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    if where == "queued":
                        scope.cancel()

                steps.start_soon(when_taken)
                steps.start_soon(when_queued)
                got.append(await db.call("m"))
        ctl.release.set()
        ctl.answer.set()
        await trio.testing.wait_all_tasks_blocked()
        stats = db.statistics()
    if where == "replied":
        # The answer was given before the cancellation: the caller has it.
        assert got == ["m"]
    else:
        assert got == []
        assert scope.cancelled_caught
    # Withdrawn requests never reach the resource; taken ones did.
    expected_seen = {
        "before queueing": [],
        "queued": ["busy"],
        "taken": ["m"],
        "replied": ["m"],
    }[where]
    assert ctl.seen == expected_seen
    assert stats.failures == 0  # cancellation never counts
    assert stats.cancelled == (where != "replied")
    assert stats.calls == stats.replies + stats.cancelled + stats.off


async def test_cancelling_the_supervisor_while_everything_is_in_flight(
    autojump_clock: Clock,
) -> None:
    finally_ran: list[str] = []

    async def slow_everything(inbox: Any, name: str, *, task_status: Any) -> None:
        try:
            await trio.sleep(1)  # slow to start
            task_status.started()
            async for request in inbox:
                await trio.sleep(10)
                request.reply(request.message)
        finally:
            finally_ran.append(name)

    async def dead(inbox: Any, *, task_status: Any) -> None:
        raise ConnectionRefusedError

    answers: list[object] = []
    start = trio.current_time()
    with trio.move_on_after(5) as outer:
        async with breaky.open_supervisor(shutdown_timeout=100) as sup:
            db = await sup.start_circuit_breaker("db", slow_everything, "db")
            await sup.start_circuit_breaker("dead", dead, failure_threshold=1)
            crashy = await sup.start_circuit_breaker(
                "crashy", slow_everything, "crashy"
            )
            async with trio.open_nursery() as callers:

                async def call(message: object) -> None:
                    try:
                        answers.append(await db.call(message, timeout=None))
                    except breaky.ResourceLost as exc:
                        answers.append(type(exc))

                for n in range(5):
                    callers.start_soon(call, n)
                await trio.sleep(2)
                crashy.failure()  # a restart under way when the cancel lands
                for _ in range(9):
                    crashy.failure()
                await trio.sleep_forever()
    assert outer.cancelled_caught
    # Prompt: no shutdown grace when cancelled from outside.
    assert trio.current_time() - start == pytest.approx(5)
    assert sorted(finally_ran) == ["crashy", "db"]
    assert db.state is State.STOPPED
    # Callers inside the cancelled scope were cancelled, not left hanging.
    assert answers == []


async def test_callers_outside_a_cancelled_supervisor_get_answers(
    autojump_clock: Clock,
) -> None:
    world = World()
    answers: list[object] = []
    async with trio.open_nursery() as outside:
        with trio.move_on_after(5):
            async with breaky.open_supervisor() as sup:
                db = await sup.start_circuit_breaker("db", service, world)

                async def call(message: object) -> None:
                    try:
                        answers.append(await db.call(message, timeout=None))
                    except breaky.ResourceLost as exc:
                        answers.append(type(exc))

                outside.start_soon(call, ("hold",))
                await trio.testing.wait_all_tasks_blocked()
                outside.start_soon(call, "queued")
                await trio.sleep_forever()
    assert sorted(map(str, answers)) == sorted([str(breaky.ResourceLost), "OFF"])
    assert await db.call("late") is OFF


async def test_a_resource_that_swallows_cancellation_is_bounded(
    autojump_clock: Clock,
) -> None:
    async def stubborn(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()  # ignores its inbox closing
        except trio.Cancelled:
            # Swallows it, cleans up for a while under a shield, returns.
            with trio.CancelScope(shield=True):
                await trio.sleep(2)

    start = trio.current_time()
    async with breaky.open_supervisor(shutdown_timeout=3) as sup:
        await sup.start_circuit_breaker("db", stubborn)
    # The shutdown timeout, then as long as its shielded cleanup took.
    assert trio.current_time() - start == pytest.approx(3 + 2)
