"""A guarded block (``async with guard.calling():``): one call, as run() makes one.

The same trial, counting, bulkhead, timeout and cancellation rules as
``run()``, on the mock clock (issue 21, "a block form").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from support import answered_calls

import breaky
from breaky import State
from breaky.testing import internals

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock


class Down(Exception):  # noqa: N818 - a dependency's state
    pass


def guard(**options: Any) -> breaky.Guard:
    options.setdefault("failure_threshold", 2)
    options.setdefault("retry_timeout", 10)
    options.setdefault("call_timeout", None)
    return breaky.Guard("api", **options)


def adds_up(api: breaky.Guard) -> breaky.BreakerStatistics:
    stats = api.statistics()
    assert stats.calls == answered_calls(stats)
    return stats


async def fail_block(api: breaky.Guard) -> None:
    with pytest.raises(Down):  # noqa: PT012 - the block is the call
        async with api.calling():
            await trio.lowlevel.checkpoint()
            raise Down


async def test_a_block_of_awaits_is_one_call(autojump_clock: Clock) -> None:
    api = guard()
    here = trio.lowlevel.current_task()
    async with api.calling() as nothing:
        assert nothing is None
        assert api.in_flight == 1
        await trio.sleep(1)
        await trio.sleep(1)
        assert trio.lowlevel.current_task() is here
    stats = adds_up(api)
    assert (stats.calls, stats.replies, stats.pending) == (1, 1, 0)
    assert repr(api.calling()) == "<breaky guarded block of 'api'>"


async def test_an_exception_leaving_the_block_counts_and_comes_out_unchanged() -> None:
    api = guard()
    error = Down("no route")
    with pytest.raises(Down) as raised:
        async with api.calling():
            raise error
    assert raised.value is error
    assert api.statistics().failures == 1
    await fail_block(api)
    assert api.state is State.OFF
    stats = adds_up(api)
    assert (stats.calls, stats.errors, stats.trips) == (2, 2, 1)


async def test_failure_exceptions_judge_the_block_as_run() -> None:
    api = guard(failure_exceptions=Down, failure_threshold=1)
    with pytest.raises(KeyError):
        async with api.calling():
            raise KeyError  # the dependency's answer: a success
    assert api.state is State.ON
    await fail_block(api)
    assert api.state is State.OFF


async def test_off_raises_breaker_off_at_entry_after_one_checkpoint() -> None:
    api = guard()
    api.force_off()
    ran = False
    with trio.testing.assert_checkpoints(), pytest.raises(breaky.BreakerOff) as off:
        async with api.raising.calling():
            ran = True  # pragma: no cover - never runs
    assert not ran
    assert (off.value.breaker, off.value.shed) == ("api", False)
    stats = adds_up(api)
    assert (stats.calls, stats.off) == (1, 1)


async def test_a_block_cancelled_at_its_off_checkpoint_is_counted_cancelled() -> None:
    api = guard()
    api.force_off()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with api.calling():
            pass  # pragma: no cover - never runs
    assert adds_up(api).cancelled == 1


async def test_the_trial_is_a_whole_block(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1, trial_calls=1)
    await fail_block(api)
    await trio.sleep(10)
    inside = trio.Event()
    others: list[type[BaseException]] = []

    async def other() -> None:
        await inside.wait()
        try:
            async with api.calling():
                pass  # pragma: no cover - refused
        except breaky.BreakerOff as exc:
            others.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        async with api.calling():
            assert internals(api).trial
            inside.set()
            await trio.sleep(1)  # the other block is refused meanwhile
            assert api.state is State.OFF
    assert others == [breaky.BreakerOff]
    assert api.state is State.ON
    assert adds_up(api).retries == 1


async def test_a_failed_trial_block_keeps_it_off(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1)
    await fail_block(api)
    await trio.sleep(10)
    await fail_block(api)  # the trial
    assert api.state is State.OFF
    assert not internals(api).trial
    assert internals(api).retry_at is not None


async def test_a_cancelled_trial_block_frees_the_trial(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1)
    await fail_block(api)
    await trio.sleep(10)
    with trio.move_on_after(1):
        async with api.calling():
            await trio.sleep_forever()
    assert not internals(api).trial
    assert api.state is State.OFF
    async with api.calling():  # the next block is the trial
        pass
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.cancelled, stats.retries, stats.failures) == (1, 2, 0)


async def test_cancellation_never_counts_as_a_failure(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1)
    with trio.move_on_after(1):
        async with api.calling():
            await trio.sleep_forever()
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.cancelled, stats.failures, stats.pending) == (1, 0, 0)


async def test_call_timeout_bounds_the_block(autojump_clock: Clock) -> None:
    api = guard(call_timeout=2, failure_threshold=1)
    async with api.calling():
        await trio.sleep(1.5)  # within it
    start = trio.current_time()
    with pytest.raises(breaky.CallTimeout, match=r"'api'.*block.*\(2 s\)"):  # noqa: PT012 - the block is the call
        async with api.calling():
            await trio.sleep(1)
            await trio.sleep(5)
    assert trio.current_time() - start == 2
    assert api.state is State.OFF  # a timeout is one failure
    stats = adds_up(api)
    assert (stats.replies, stats.timeouts) == (1, 1)


async def test_a_blocks_own_timeout_and_none(autojump_clock: Clock) -> None:
    api = guard(call_timeout=2)
    async with api.calling(timeout=None):
        await trio.sleep(100)
    with pytest.raises(breaky.CallTimeout, match=r"\(0.5 s\)"):
        async with api.calling(timeout=0.5):
            await trio.sleep(1)
    with pytest.raises(TypeError, match=r"timeout must be .* got '1'"):
        api.calling(timeout="1")  # type: ignore[arg-type]
    assert adds_up(api).calls == 2  # a bad timeout makes no call


async def test_the_callers_own_cancel_scope_is_not_a_timeout(
    autojump_clock: Clock,
) -> None:
    api = guard(call_timeout=5)
    with trio.move_on_after(1) as outer:
        async with api.calling():
            await trio.sleep(10)
    assert outer.cancelled_caught
    stats = adds_up(api)
    assert (stats.cancelled, stats.timeouts) == (1, 0)


async def test_a_block_left_after_its_deadline_without_checkpoint_is_a_reply(
    autojump_clock: Clock,
) -> None:
    api = guard(call_timeout=1, slow_call_duration=0.5)
    async with api.calling():
        autojump_clock.jump(2)  # no checkpoint: the scope never cancelled it
    stats = adds_up(api)
    assert (stats.replies, stats.slow_calls, stats.failures) == (1, 1, 1)


async def test_what_is_left_of_a_group_after_the_timeout_is_judged(
    autojump_clock: Clock,
) -> None:
    api = guard(call_timeout=1, failure_threshold=1)

    async def converts() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise Down from None

    with pytest.RaisesGroup(Down):
        async with api.calling(), trio.open_nursery() as nursery:
            nursery.start_soon(converts)
            await trio.sleep_forever()
    assert api.state is State.OFF
    stats = adds_up(api)
    assert (stats.errors, stats.timeouts) == (1, 0)


async def test_an_exception_group_from_the_block_counts(autojump_clock: Clock) -> None:
    api = guard(failure_threshold=1)

    async def fails() -> None:
        raise Down

    with pytest.RaisesGroup(Down):
        async with api.calling(), trio.open_nursery() as nursery:
            nursery.start_soon(fails)
    assert api.state is State.OFF  # an ExceptionGroup is an Exception
    assert adds_up(api).errors == 1


async def test_a_block_takes_a_place_in_the_bulkhead(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, max_queued=1, call_timeout=10)
    order: list[str] = []
    release = trio.Event()

    async def block(name: str, hold: bool) -> None:
        try:
            async with api.calling():
                order.append(name)
                if hold:
                    await release.wait()
        except breaky.BreakerOff as exc:
            order.append(f"{name} shed" if exc.shed else f"{name} OFF")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(block, "first", True)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(block, "second", False)
        await trio.testing.wait_all_tasks_blocked()
        assert internals(api).waiting == 1
        nursery.start_soon(block, "third", False)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["first", "third shed", "second"]
    stats = adds_up(api)
    assert (stats.replies, stats.shed, stats.pending) == (2, 1, 0)
    assert internals(api).taken == 0


async def test_a_wait_in_line_past_the_timeout_is_shed(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, max_queued=5, call_timeout=2, failure_threshold=1)
    async with trio.open_nursery() as nursery:

        async def holder() -> None:
            async with api.calling(timeout=None):
                await trio.sleep(10)

        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(breaky.BreakerOff) as off:
            async with api.calling():
                pass  # pragma: no cover - never runs
        assert off.value.shed
    assert api.state is State.ON  # overload is no failure
    stats = adds_up(api)
    assert (stats.shed, stats.replies) == (1, 1)


async def test_a_block_that_waited_in_line_then_timed_out_is_no_failure(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=1, call_timeout=2, failure_threshold=1)
    async with trio.open_nursery() as nursery:

        async def holder() -> None:
            async with api.calling():
                await trio.sleep(1)

        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(breaky.CallTimeout):
            async with api.calling():  # waits 1 s, then has 1 s left
                await trio.sleep(5)
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.timeouts, stats.failures, stats.replies) == (1, 0, 1)


async def test_blocks_waiting_in_line_are_turned_away_when_off(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=1, failure_threshold=1, call_timeout=100)
    refused: list[bool] = []

    async def waiter() -> None:
        with pytest.raises(breaky.BreakerOff) as off:
            async with api.calling():
                pass  # pragma: no cover - never runs
        refused.append(off.value.shed)

    async with trio.open_nursery() as nursery:
        with pytest.raises(Down):  # noqa: PT012 - the block is the call
            async with api.calling():
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                raise Down
    assert refused == [False]
    stats = adds_up(api)
    assert (stats.off, stats.errors) == (1, 1)


async def test_a_block_cancelled_in_line_leaves_it(autojump_clock: Clock) -> None:
    for timeout in (None, 10):
        api = guard(max_concurrent=1, call_timeout=timeout)
        async with api.calling():
            with trio.move_on_after(1):
                async with api.calling():
                    pass  # pragma: no cover - never runs
            assert internals(api).waiting == 0
        stats = adds_up(api)
        assert (stats.cancelled, stats.replies) == (1, 1)
        assert internals(api).taken == 0


async def test_the_trial_block_takes_no_place(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, failure_threshold=1)
    async with api.calling():  # holds the one place throughout
        api.failure()
        await trio.sleep(10)
        async with api.calling():  # the trial runs however full the bulkhead
            assert internals(api).trial
        assert api.state is State.ON
    assert internals(api).taken == 0


async def test_a_block_is_used_once() -> None:
    api = guard()
    block = api.calling()
    async with block:
        pass
    with pytest.raises(RuntimeError, match=r"entered once: use guard.calling\(\)"):
        async with block:
            pass  # pragma: no cover - refused
    assert adds_up(api).calls == 1


async def test_slow_blocks_count(autojump_clock: Clock) -> None:
    api = guard(slow_call_duration=1, failure_threshold=1)
    async with api.calling():
        await trio.sleep(2)
    assert api.state is State.OFF
    assert adds_up(api).slow_calls == 1


async def test_keyed_guards_guard_blocks_per_key(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream", max_keys=1, failure_threshold=1, call_timeout=None
        )
        with pytest.raises(Down):
            async with hosts.calling("a.example"):
                raise Down
        assert hosts["a.example"].state is State.OFF
        # At the bound, with the one key OFF, a new key is refused at entry.
        with trio.testing.assert_checkpoints(), pytest.raises(breaky.BreakerOff) as off:
            async with hosts.calling("b.example"):
                pass  # pragma: no cover - never runs
        assert off.value.breaker == "upstream[b.example]"
        assert hosts.statistics().refused == 1
        with pytest.raises(TypeError, match="key must be a str"):
            hosts.calling(3)  # type: ignore[arg-type]


async def test_a_block_with_no_timeout_waiting_in_line_is_turned_away_when_off(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=1, failure_threshold=1, call_timeout=None)
    refused: list[bool] = []

    async def waiter() -> None:
        with pytest.raises(breaky.BreakerOff) as off:
            async with api.calling():
                pass  # pragma: no cover - never runs
        refused.append(off.value.shed)

    async with trio.open_nursery() as nursery:
        with pytest.raises(Down):  # noqa: PT012 - the block is the call
            async with api.calling():
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                raise Down
    assert refused == [False]
    stats = adds_up(api)
    assert (stats.off, stats.errors) == (1, 1)
