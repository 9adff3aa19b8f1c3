"""breaky.testing: fault injection for users' own resources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

import breaky
from breaky import OFF, State
from breaky.testing import Faults, InjectedFault, wait_for_state

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock


async def echo(inbox: Any, prefix: str, *, task_status: Any) -> None:
    task_status.started()
    async for request in inbox:
        request.reply(prefix + request.message)


async def test_no_faults_is_transparent(autojump_clock: Clock) -> None:
    faults = Faults(seed=1)
    wrapped = faults.wrap(echo)
    assert wrapped.__name__ == "echo"
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", wrapped, "> ")
        assert await db.call("hi") == "> hi"
    assert not faults.injected


async def test_every_fault_is_injected_and_counted(autojump_clock: Clock) -> None:
    faults = Faults(
        crash=0.1,
        hang=0.1,
        normal_return=0.1,
        slow_reply=0.2,
        fail_start=0.3,
        slow_start=0.3,
        delay=0.5,
        seed=7,
    )
    outcomes: dict[str, int] = {}
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db",
            faults.wrap(echo),
            "",
            failure_threshold=3,
            retry_timeout=1,
            call_timeout=2,
        )
        for n in range(300):
            try:
                answer = await db.call(str(n))
                kind = "off" if answer is OFF else "reply"
            except breaky.ResourceLost as exc:
                cause = exc.__cause__
                kind = "lost"
                assert cause is None or isinstance(cause, InjectedFault)
            except breaky.CallTimeout:
                kind = "timeout"
            outcomes[kind] = outcomes.get(kind, 0) + 1
            await trio.sleep(0.25)
    assert set(faults.injected) == {
        "crash",
        "hang",
        "normal_return",
        "slow_reply",
        "fail_start",
        "slow_start",
    }
    assert outcomes["reply"] > 50
    # Each crash or return loses the request it held; a hang holds the
    # resource until calls time out often enough to trip the breaker.
    lost_by_faults = faults.injected["crash"] + faults.injected["normal_return"]
    assert outcomes["lost"] >= lost_by_faults
    assert outcomes["timeout"] >= faults.injected["hang"]
    assert outcomes["off"] > 0


async def test_a_seed_replays_the_same_faults(autojump_clock: Clock) -> None:
    async def run(seed: int) -> tuple[list[str], dict[str, int]]:
        faults = Faults(crash=0.2, fail_start=0.3, seed=seed)
        seen = []
        async with breaky.open_supervisor() as sup:
            db = await sup.start_circuit_breaker(
                "db", faults.wrap(echo), "", failure_threshold=1000
            )
            for n in range(50):
                try:
                    seen.append(await db.call(str(n)))
                except breaky.ResourceLost:  # noqa: PERF203
                    seen.append("lost")
            assert db.state is State.ON
        return seen, dict(faults.injected)

    assert await run(3) == await run(3)
    assert await run(3) != await run(4)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"crash": 1.5},
            ValueError,
            r"crash must be a probability from 0 to 1, got 1.5",
        ),
        ({"hang": -0.1}, ValueError, r"hang must be .* got -0.1"),
        ({"slow_start": "x"}, TypeError, r"slow_start must be .* got 'x'"),
        ({"fail_start": True}, TypeError, r"fail_start must be .* got True"),
        ({"delay": -1}, ValueError, r"delay must be .* got -1"),
        (
            {"crash": 0.6, "hang": 0.6},
            ValueError,
            r"crash \+ hang \+ normal_return \+ slow_reply must not exceed 1",
        ),
    ],
)
def test_bad_rates_are_refused(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Faults(**options)


# wait_for_state.


async def down_until(inbox: Any, world: dict[str, bool], *, task_status: Any) -> None:
    if world["down"]:
        raise ConnectionRefusedError
    task_status.started()
    async for request in inbox:
        request.reply(request.message)


async def test_wait_for_state_waits_for_the_change(autojump_clock: Clock) -> None:
    world = {"down": True}
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", down_until, world, failure_threshold=1, retry_timeout=30
        )
        assert db.state is State.OFF
        world["down"] = False
        start = trio.current_time()
        await wait_for_state(db, State.ON)
        assert db.state is State.ON
        assert trio.current_time() - start == 30  # the retry, not a poll

        db.force_off()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_state, db, State.ON)
            await trio.testing.wait_all_tasks_blocked()
            db.reset()  # FORCED_OFF -> OFF is not it; OFF -> ON, once started
            assert db.state is State.OFF
        assert db.state is State.ON


async def test_wait_for_state_is_a_checkpoint_when_already_there(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", echo, "")
        with trio.testing.assert_checkpoints():
            await wait_for_state(db, State.ON)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await wait_for_state(db, State.ON)


async def test_wait_for_state_sees_a_state_passed_through(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup, trio.open_nursery() as nursery:
        db = await sup.start_circuit_breaker("db", echo, "", retry_timeout=5)
        seen = trio.Event()

        async def wait_off() -> None:
            await wait_for_state(db, State.FORCED_OFF)
            seen.set()

        nursery.start_soon(wait_off)
        await trio.testing.wait_all_tasks_blocked()
        db.force_off()
        db.reset()  # FORCED_OFF -> OFF -> ON, before the waiter runs
        with trio.fail_after(60):
            await seen.wait()
        assert db.state is not State.FORCED_OFF


async def test_wait_for_state_when_the_breaker_stops_first(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", echo, "")
        await sup.stop_circuit_breaker("db")
        with pytest.raises(RuntimeError, match=r"'db' stopped before it was OFF"):
            await wait_for_state(db, State.OFF)
        await wait_for_state(db, State.STOPPED)


@pytest.mark.parametrize(
    ("breaker", "state", "match"),
    [
        (
            "db",
            State.ON,
            r"breaker must be a breaky\.CircuitBreaker or Guard, got 'db'",
        ),
        (None, "on", r"state must be a breaky\.State, got 'on'"),
    ],
)
async def test_wait_for_state_bad_input(breaker: Any, state: Any, match: str) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", echo, "")
        with pytest.raises(TypeError, match=match):
            await wait_for_state(db if breaker is None else breaker, state)
