"""Policy options beyond the seed, manual control, events and statistics."""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from support import World, answered_calls, service

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock

import breaky
from breaky import OFF, Policy, State

# Every test takes ``autojump_clock``: pytest-trio installs a clock only when
# the test itself asks for it. No test sleeps for real.


async def call_expecting_lost(
    db: breaky.CircuitBreaker[Any, Any], message: Any
) -> None:
    with pytest.raises(breaky.ResourceLost):
        await db.call(message)


def attempts_recorder() -> tuple[list[float], Any]:
    """A resource that never starts, recording when each attempt was made."""
    times: list[float] = []

    async def never(inbox: Any, *, task_status: Any) -> None:
        times.append(trio.current_time())
        raise ConnectionRefusedError

    return times, never


# Policy objects.


def test_policy_defaults_are_the_seeds() -> None:
    policy = Policy()
    assert (policy.failure_threshold, policy.retry_timeout, policy.call_timeout) == (
        10,
        10.0,
        5.0,
    )
    assert policy.failure_window is None
    assert policy.retry_backoff == 1.0
    assert policy.max_retry_timeout is None
    assert policy.retry_jitter == 0.0
    assert policy.slow_call_duration is None
    assert policy.failure_exceptions is None
    assert policy.start_timeout == 10.0
    assert (policy.trial_calls, policy.max_concurrent, policy.failure_rate) == (
        1,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"failure_window": 0}, ValueError, r"failure_window .* got 0"),
        ({"failure_window": math.inf}, ValueError, r"failure_window .* got inf"),
        ({"retry_backoff": 0.5}, ValueError, r"retry_backoff .* >= 1.0, got 0.5"),
        ({"retry_backoff": math.nan}, ValueError, r"retry_backoff .* got nan"),
        ({"retry_backoff": "2"}, TypeError, r"retry_backoff .* got '2'"),
        ({"retry_backoff": True}, TypeError, r"retry_backoff .* got True"),
        ({"max_retry_timeout": 5}, ValueError, r"max_retry_timeout .*\(10.0\), got 5"),
        ({"max_retry_timeout": -1}, ValueError, r"max_retry_timeout .* got -1"),
        ({"retry_jitter": 1}, ValueError, r"retry_jitter .* < 1.0, got 1"),
        ({"retry_jitter": -0.1}, ValueError, r"retry_jitter .* got -0.1"),
        ({"retry_jitter": None}, TypeError, r"retry_jitter .* got None"),
        ({"failure_exceptions": int}, TypeError, r"failure_exceptions .* got <class"),
        ({"failure_exceptions": (OSError, 3)}, TypeError, r"failure_exceptions"),
        (
            {"failure_exceptions": KeyboardInterrupt},
            TypeError,
            r"failure_exceptions .*KeyboardInterrupt",
        ),
        ({"slow_call_duration": 0}, ValueError, r"slow_call_duration .* got 0"),
        ({"rng": 42}, TypeError, r"rng must be a random.Random or None, got 42"),
        ({"failure_threshold": 0}, ValueError, r"failure_threshold .* got 0"),
    ],
)
def test_bad_policies_are_refused_naming_the_option(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Policy(**options)


async def test_a_policy_can_be_shared_and_keywords_override_it(
    autojump_clock: Clock,
) -> None:
    policy = Policy(failure_threshold=2, retry_timeout=30, call_timeout=1)
    async with breaky.open_supervisor() as sup:
        a = await sup.start_circuit_breaker("a", service, World(), policy=policy)
        b = await sup.start_circuit_breaker(
            "b", service, World(), policy=policy, failure_threshold=5
        )
        assert a.policy is policy
        assert b.policy == attrs.evolve(policy, failure_threshold=5)
        for breaker in (a, b):
            breaker.failure()
            breaker.failure()
        assert (a.state, b.state) == (State.OFF, State.ON)
        with pytest.raises(TypeError, match=r"policy must be a breaky\.Policy"):
            await sup.start_circuit_breaker("c", service, World(), policy={})
        with pytest.raises(ValueError, match="failure_threshold"):
            await sup.start_circuit_breaker(
                "c", service, World(), policy=policy, failure_threshold=0
            )
        assert "c" not in sup


# The failure window.


async def test_a_window_forgets_old_failures(autojump_clock: Clock) -> None:
    policy = Policy(failure_threshold=3, failure_window=60)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(), policy=policy)
        for at in (0, 30, 70):  # the first is 70 s old at the third: forgotten
            await trio.sleep_until(at)
            db.failure()
        assert db.state is State.ON
        assert db.statistics().failures == 2
        await trio.sleep_until(95)
        assert db.statistics().failures == 1  # 30 is forgotten at 90
        await trio.sleep_until(100)
        db.failure()
        db.failure()
        assert db.state is State.OFF


# Backoff and jitter.


async def test_the_exact_backoff_sequence_capped(autojump_clock: Clock) -> None:
    times, never = attempts_recorder()
    policy = Policy(
        failure_threshold=1, retry_timeout=10, retry_backoff=2, max_retry_timeout=50
    )
    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", never, policy=policy)
        await trio.sleep(10 + 20 + 40 + 50 + 50 + 1)
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits == [10, 20, 40, 50, 50]


async def test_the_wait_goes_back_to_retry_timeout_after_a_success(
    autojump_clock: Clock,
) -> None:
    world = World(down=True)
    policy = Policy(failure_threshold=1, retry_timeout=10, retry_backoff=3)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, policy=policy)
        await trio.sleep(10 + 30 + 1)  # attempts at 10 and 40 failed
        world.down = False
        await trio.sleep_until(129.9)  # the next wait is 90
        assert (world.starts, db.state) == (3, State.OFF)
        await trio.sleep_until(130.5)
        assert (world.starts, db.state) == (4, State.ON)
        world.down = True
        db.failure()  # trip at 130.5: the wait is 10 again
        await trio.sleep_until(140.4)
        assert world.starts == 4
        await trio.sleep_until(140.6)
        assert world.starts == 5


async def test_jitter_spreads_waits_and_a_seed_repeats_them(
    autojump_clock: Clock,
) -> None:
    async def waits_with(seed: int) -> list[float]:
        times, never = attempts_recorder()
        policy = Policy(
            failure_threshold=1,
            retry_timeout=10,
            retry_jitter=0.1,
            rng=random.Random(seed),
        )
        async with breaky.open_supervisor() as sup:
            await sup.start_circuit_breaker("db", never, policy=policy)
            await trio.sleep(200 * 11)
        return [b - a for a, b in itertools.pairwise(times)]

    first = await waits_with(1)
    assert len(first) >= 195
    assert all(9 <= w <= 11 for w in first)
    assert min(first) < 9.2
    assert max(first) > 10.8
    assert len(set(first)) == len(first)
    assert await waits_with(1) == pytest.approx(first)
    assert await waits_with(2) != pytest.approx(first)


# Classifying errors and slow calls.


async def test_failure_exceptions_count_failed_requests(autojump_clock: Clock) -> None:
    policy = Policy(failure_threshold=2, failure_exceptions=(OSError,))
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(), policy=policy)
        with pytest.raises(LookupError):
            await db.call(("fail", LookupError()))
        assert db.statistics().failures == 0
        with pytest.raises(ConnectionError):
            await db.call(("fail", ConnectionError()))
        assert db.statistics().failures == 1
        with pytest.raises(TimeoutError):
            await db.call(("fail", TimeoutError()))
        assert db.state is State.OFF


async def test_a_predicate_classifies_and_cancellation_never_counts(
    autojump_clock: Clock,
) -> None:
    policy = Policy(
        failure_threshold=1,
        failure_exceptions=lambda exc: "fatal" in str(exc),
    )
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(), policy=policy)
        with pytest.raises(ValueError, match="mild"):
            await db.call(("fail", ValueError("mild")))
        with trio.move_on_after(1):
            await db.call(("sleep", 5))
        assert db.state is State.ON
        with pytest.raises(ValueError, match="fatal"):
            await db.call(("fail", ValueError("fatal")))
        assert db.state is State.OFF


async def test_slow_calls_are_answered_and_counted(autojump_clock: Clock) -> None:
    policy = Policy(failure_threshold=2, slow_call_duration=1.0, call_timeout=None)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(), policy=policy)
        assert await db.call(("sleep", 0.5)) == 0.5
        assert await db.call(("sleep", 1.5)) == 1.5
        assert db.statistics().slow_calls == 1
        assert db.state is State.ON
        assert await db.call(("sleep", 2)) == 2
        assert db.state is State.OFF
        assert db.statistics().slow_calls == 2


# Manual control.


async def test_force_off_stays_off_until_reset(autojump_clock: Clock) -> None:
    world = World()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, world, retry_timeout=10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_expecting_lost, db, ("sleep", 100))
            await trio.testing.wait_all_tasks_blocked()
            db.force_off()
        assert db.state is State.FORCED_OFF
        assert db.resource is OFF
        assert world.finally_ran == 1
        assert await db.call("x") is OFF
        db.failure()
        await trio.sleep(10 * 100)
        assert db.state is State.FORCED_OFF
        assert world.starts == 1
        db.reset()
        await trio.testing.wait_all_tasks_blocked()
        assert db.state is State.ON
        assert world.starts == 2
        assert await db.call("back") == "back"


async def test_reset_while_off_tries_at_once_and_while_on_clears(
    autojump_clock: Clock,
) -> None:
    world = World(down=True)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=2, retry_timeout=100
        )
        assert db.state is State.OFF
        world.down = False
        db.reset()
        await trio.testing.wait_all_tasks_blocked()
        assert db.state is State.ON
        assert trio.current_time() == 0
        db.failure()
        db.reset()
        db.failure()
        assert db.state is State.ON
        assert db.statistics().failures == 1


async def test_force_off_while_a_retry_is_starting(autojump_clock: Clock) -> None:
    starts = 0

    async def slow_to_fail(inbox: Any, *, task_status: Any) -> None:
        nonlocal starts
        starts += 1
        await trio.sleep(5)
        raise ConnectionRefusedError

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", slow_to_fail, failure_threshold=1, retry_timeout=10
        )
        await trio.sleep(12)  # the attempt started at 15 is under way
        db.force_off()
        await trio.sleep(100)
        assert db.state is State.FORCED_OFF
        assert starts == 2


async def test_commands_after_stop_change_nothing(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World())
        await sup.stop_circuit_breaker("db")
        db.force_off()
        db.reset()
        assert db.state is State.STOPPED
        with pytest.raises(trio.EndOfChannel):
            await db.subscribe().receive()


# Events.


async def test_events_arrive_in_order_and_end_with_the_breaker(
    autojump_clock: Clock,
) -> None:
    world = World()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=1, retry_timeout=10
        )
        events = db.subscribe()
        world.down = True
        with pytest.raises(breaky.ResourceLost):
            await db.call("x")
        world.down = False
        await trio.sleep(11)
        db.force_off()
        db.reset()
        await trio.testing.wait_all_tasks_blocked()
        await sup.stop_circuit_breaker("db")
        seen = [(c.old, c.new, c.reason, c.time) async for c in events]
    assert seen == [
        (State.ON, State.OFF, "the resource crashed", 0),
        (State.OFF, State.ON, "the resource started", 10),
        (State.ON, State.FORCED_OFF, "force_off() was called", 11),
        (State.FORCED_OFF, State.OFF, "reset() was called", 11),
        (State.OFF, State.ON, "the resource started", 11),
        (State.ON, State.STOPPED, "stopped", 11),
    ]
    assert events.missed == 0


async def test_a_waiting_subscriber_is_woken_by_each_change(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World())
        events = db.subscribe()
        received: list[breaky.StateChange] = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for change in events:
                    received.append(change)  # noqa: PERF401 - as it arrives

            nursery.start_soon(watch)
            await trio.sleep(5)
            db.force_off()
            await trio.sleep(5)
            assert [c.new for c in received] == [State.FORCED_OFF]
            await sup.stop_circuit_breaker("db")
        assert [c.new for c in received] == [State.FORCED_OFF, State.STOPPED]


async def test_the_supervisors_channel_sees_every_breaker(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        events = sup.subscribe()
        await sup.start_circuit_breaker("a", service, World())
        await sup.start_circuit_breaker("b", service, World(down=True))
    seen = [(c.breaker, c.old, c.new) async for c in events]
    assert sorted(seen, key=str) == sorted(
        [
            ("a", State.STARTING, State.ON),
            ("b", State.STARTING, State.OFF),
            ("a", State.ON, State.STOPPED),
            ("b", State.OFF, State.STOPPED),
        ],
        key=str,
    )
    late = sup.subscribe()
    with pytest.raises(trio.EndOfChannel):
        await late.receive()


async def test_a_subscriber_that_never_reads_slows_nothing(
    autojump_clock: Clock,
) -> None:
    async def flapping(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        await trio.sleep(1)

    async with breaky.open_supervisor() as sup:
        everything = sup.subscribe(max_buffer=5)
        db = await sup.start_circuit_breaker(
            "db", flapping, failure_threshold=1, retry_timeout=1
        )
        lazy = db.subscribe(max_buffer=10)
        start = trio.current_time()
        await trio.sleep(1000)
        # One flap (OFF, then ON) every 2 s, on time: nothing was held up.
        flaps = db.statistics().trips
        assert flaps == pytest.approx((trio.current_time() - start) / 2, abs=1)
        # Changes since subscribing (ON already): each trip, and each
        # recovery but the one still to come if it is OFF now.
        changes = 2 * flaps - (db.state is State.OFF)
        assert lazy.missed == changes - 10
        assert everything.missed > 900
        last = [lazy.receive_nowait() for _ in range(10)]
        assert [c.time for c in last] == sorted(c.time for c in last)
        assert last[-1].time > 997
        with pytest.raises(trio.WouldBlock):
            lazy.receive_nowait()
        await lazy.aclose()
        with pytest.raises(trio.ClosedResourceError):
            lazy.receive_nowait()
        with pytest.raises(ValueError, match="max_buffer must be an int >= 1, got 0"):
            db.subscribe(max_buffer=0)
        assert "missed" in repr(everything)


# Statistics.


async def test_statistics_add_up(autojump_clock: Clock) -> None:
    world = World()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=3, retry_timeout=10
        )
        assert await db.call("ok") == "ok"
        with pytest.raises(LookupError):
            await db.call(("fail", LookupError()))
        with pytest.raises(breaky.CallTimeout):
            await db.call(("sleep", 2), timeout=1)
        with trio.move_on_after(1):
            await db.call(("sleep", 2))
        with pytest.raises(breaky.ResourceLost):
            await db.call(("crash", ValueError()))
        await db.cast("cast")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_expecting_lost, db, ("hold",))
            await trio.testing.wait_all_tasks_blocked()
            pending = db.statistics()
            assert pending.pending == 1
            db.failure()  # the third failure: OFF
        assert await db.call("x") is OFF
        stats = db.statistics()
    assert stats.calls == 7
    assert (stats.replies, stats.errors, stats.timeouts, stats.cancelled) == (
        1,
        1,
        1,
        1,
    )
    assert (stats.lost, stats.off, stats.pending) == (2, 1, 0)
    assert stats.calls == answered_calls(stats)
    assert (stats.crashes, stats.restarts, stats.trips, stats.casts) == (1, 1, 1, 1)
    assert (stats.failed_starts, stats.retries) == (0, 0)
    assert stats.state is State.OFF
    assert stats.failures == 3


async def test_statistics_count_starts_and_retries(autojump_clock: Clock) -> None:
    world = World(down=True)
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db", service, world, failure_threshold=2, retry_timeout=10
        )
        await trio.sleep(25)
        stats = db.statistics()
    assert (stats.failed_starts, stats.restarts, stats.retries, stats.trips) == (
        4,
        1,
        2,
        1,
    )
