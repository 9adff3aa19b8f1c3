"""A guarded stream (``async with guard.stream(fn, *args) as items``): one call.

OFF before the first item, a failure while iterating counts, a trial is a
whole iteration, leaving early or being cancelled counts cancelled and
leaks no trial or place; the timeout bounds each wait, on the mock clock
(issue 21, "guarding async generators").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from support import answered_calls

import breaky
from breaky import State
from breaky.testing import internals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock as Clock


class Down(Exception):  # noqa: N818 - a dependency's state
    pass


class Rows:
    """A cursor on a fake database: yields rows, fails on request."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.fail_at: int | None = None
        self.delay = 0.0

    async def rows(self, count: int) -> AsyncIterator[int]:
        self.opened += 1
        try:
            for n in range(count):
                await trio.sleep(self.delay)
                if n == self.fail_at:
                    msg = f"row {n}"
                    raise Down(msg)
                yield n
        finally:
            self.closed += 1


def guard(**options: Any) -> breaky.Guard:
    options.setdefault("failure_threshold", 2)
    options.setdefault("retry_timeout", 10)
    options.setdefault("call_timeout", None)
    return breaky.Guard("api", **options)


def adds_up(api: breaky.Guard) -> breaky.BreakerStatistics:
    stats = api.statistics()
    assert stats.calls == answered_calls(stats)
    return stats


async def read(api: breaky.Guard, db: Rows, count: int = 3) -> list[int]:
    async with api.stream(db.rows, count) as items:
        return [item async for item in items]


async def test_a_stream_is_one_call(autojump_clock: Clock) -> None:
    api, db = guard(), Rows()
    async with api.stream(db.rows, 3) as items:
        assert api.in_flight == 1
        got = [item async for item in items]
    assert got == [0, 1, 2]
    assert (db.opened, db.closed) == (1, 1)
    stats = adds_up(api)
    assert (stats.calls, stats.replies, stats.pending) == (1, 1, 0)
    assert repr(api.stream(db.rows, 1)) == "<breaky guarded stream of 'api'>"


async def test_a_failure_while_iterating_counts_and_comes_out() -> None:
    api, db = guard(), Rows()
    db.fail_at = 2
    got: list[int] = []
    for _ in range(2):
        with pytest.raises(Down, match="row 2"):  # noqa: PT012 - the block is the call
            async with api.stream(db.rows, 5) as items:
                async for item in items:
                    got.append(item)  # noqa: PERF401 - the items before the error
    assert got == [0, 1, 0, 1]  # the items before it were delivered
    assert api.state is State.OFF
    stats = adds_up(api)
    assert (stats.calls, stats.errors, stats.trips) == (2, 2, 1)
    assert db.closed == 2


async def test_off_comes_before_the_first_item(autojump_clock: Clock) -> None:
    api, db = guard(), Rows()
    api.force_off()
    with trio.testing.assert_checkpoints(), pytest.raises(breaky.BreakerOff) as off:
        async with api.raising.stream(db.rows, 3):
            pass  # pragma: no cover - never runs
    assert off.value.breaker == "api"
    assert db.opened == 0  # fn was never called
    assert adds_up(api).off == 1


async def test_the_trial_is_a_whole_iteration(autojump_clock: Clock) -> None:
    api, db = guard(failure_threshold=1), Rows()
    db.fail_at = 0
    with pytest.raises(Down):
        await read(api, db)
    db.fail_at = None
    db.delay = 1
    await trio.sleep(10)
    async with api.stream(db.rows, 3) as items:
        async for item in items:
            assert internals(api).trial
            assert api.state is State.OFF  # until the whole stream has ended
            with pytest.raises(breaky.BreakerOff):
                await read(api, db)
            assert item < 3
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.retries, stats.off, stats.replies) == (1, 3, 1)


async def test_a_trial_failing_late_keeps_it_off(autojump_clock: Clock) -> None:
    api, db = guard(failure_threshold=1), Rows()
    api.failure()
    await trio.sleep(10)
    db.fail_at = 2
    with pytest.raises(Down):
        await read(api, db, 5)
    assert api.state is State.OFF
    assert not internals(api).trial


async def test_leaving_early_closes_it_and_frees_the_trial(
    autojump_clock: Clock,
) -> None:
    api, db = guard(failure_threshold=1), Rows()
    api.failure()
    await trio.sleep(10)
    async with api.stream(db.rows, 10) as items:
        async for item in items:
            if item == 1:
                break
    assert db.closed == 1  # the generator's finally ran when the block ended
    assert not internals(api).trial
    assert api.state is State.OFF
    assert await read(api, db) == [0, 1, 2]  # the next stream is the trial
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.cancelled, stats.failures, stats.retries) == (1, 0, 2)


async def test_an_error_in_the_callers_loop_is_not_the_streams() -> None:
    api, db = guard(failure_threshold=1), Rows()
    with pytest.raises(KeyError):  # noqa: PT012 - the block is the call
        async with api.stream(db.rows, 10) as items:
            async for _ in items:
                raise KeyError
    assert api.state is State.ON
    assert adds_up(api).cancelled == 1
    assert db.closed == 1


async def test_cancelled_while_waiting_for_an_item(autojump_clock: Clock) -> None:
    for timeout in (None, 100):
        api, db = guard(failure_threshold=1, call_timeout=timeout), Rows()
        db.delay = 10
        with trio.move_on_after(15):
            await read(api, db)
        assert api.state is State.ON
        stats = adds_up(api)
        assert (stats.cancelled, stats.pending) == (1, 0)
        assert db.closed == 1


async def test_the_timeout_bounds_each_wait_not_the_stream(
    autojump_clock: Clock,
) -> None:
    api, db = guard(call_timeout=2, failure_threshold=1), Rows()
    db.delay = 1.5
    start = trio.current_time()
    async with api.stream(db.rows, 4) as items:
        async for _ in items:
            await trio.sleep(5)  # the caller's own work is not the stream's
    assert trio.current_time() - start == 4 * 6.5
    assert api.state is State.ON
    db.delay = 3
    with pytest.raises(breaky.CallTimeout, match=r"'api'.*next item.*\(2 s\)"):
        await read(api, db)
    assert api.state is State.OFF  # one failure
    assert db.closed == 2
    stats = adds_up(api)
    assert (stats.replies, stats.timeouts) == (1, 1)


async def test_a_streams_own_timeout(autojump_clock: Clock) -> None:
    api, db = guard(call_timeout=1), Rows()
    db.delay = 5
    async with api.stream(db.rows, 1, timeout=None) as items:
        assert [item async for item in items] == [0]
    with pytest.raises(ValueError, match=r"timeout must be .* got -1"):
        api.stream(db.rows, 1, timeout=-1)
    assert adds_up(api).calls == 1


async def test_slow_means_a_slow_item_not_a_slow_caller(
    autojump_clock: Clock,
) -> None:
    api, db = guard(slow_call_duration=2, failure_threshold=1), Rows()
    db.delay = 1
    async with api.stream(db.rows, 5) as items:
        async for _ in items:
            await trio.sleep(10)
    assert api.state is State.ON
    db.delay = 3
    await read(api, db)
    assert api.state is State.OFF
    assert adds_up(api).slow_calls == 1


async def test_a_stream_holds_its_place_until_it_ends(autojump_clock: Clock) -> None:
    api, db = guard(max_concurrent=1, max_queued=1, call_timeout=5), Rows()
    db.delay = 1
    order: list[str] = []

    async def reader(name: str) -> None:
        try:
            order.append(f"{name} {await read(api, db, 2)}")
        except breaky.BreakerOff as exc:
            order.append(f"{name} {'shed' if exc.shed else 'OFF'}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reader, "second")
        await trio.testing.wait_all_tasks_blocked()
        assert (internals(api).taken, internals(api).waiting) == (1, 1)
        nursery.start_soon(reader, "third")
    assert order == ["third shed", "first [0, 1]", "second [0, 1]"]
    assert internals(api).taken == 0
    stats = adds_up(api)
    assert (stats.replies, stats.shed) == (2, 1)


async def test_a_wait_for_a_place_has_the_timeout(autojump_clock: Clock) -> None:
    api, db = guard(max_concurrent=1, call_timeout=2, failure_threshold=1), Rows()
    db.delay = 3
    async with api.stream(db.rows, 1, timeout=None) as items:
        with pytest.raises(breaky.BreakerOff) as off:
            await read(api, db)
        assert off.value.shed
        with trio.move_on_after(1):  # cancelled in line: leaves it
            await read(api, db)
        assert internals(api).waiting == 0
        assert [item async for item in items] == [0]
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.shed, stats.cancelled, stats.replies) == (1, 1, 1)


async def test_streams_in_line_are_turned_away_when_off(autojump_clock: Clock) -> None:
    api, db = guard(max_concurrent=1, failure_threshold=1), Rows()
    db.fail_at = 0
    db.delay = 1
    refused: list[bool] = []

    async def waiter() -> None:
        with pytest.raises(breaky.BreakerOff) as off:
            await read(api, db)
        refused.append(off.value.shed)

    async with trio.open_nursery() as nursery:
        with pytest.raises(Down):  # noqa: PT012 - the block is the call
            async with api.stream(db.rows, 1) as items:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await items.__anext__()
    assert refused == [False]
    assert db.opened == 1


def sync_rows(count: int) -> list[int]:
    return list(range(count))


async def async_rows(count: int) -> list[int]:
    return list(range(count))  # pragma: no cover - never awaited


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (sync_rows, r"returned list, not an async iterable"),
        (async_rows, r"returned a coroutine: .*guard a coroutine function with run"),
        (lambda: None, r"takes 0 positional arguments"),
    ],
)
async def test_a_wrong_function_is_a_wrong_call_never_a_failure(
    fn: Any, match: str
) -> None:
    api = guard(failure_threshold=1)
    with pytest.raises(TypeError, match=match):
        async with api.stream(fn, 3):
            pass  # pragma: no cover - never runs
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.errors, stats.failures) == (1, 0)


class Interrupt(BaseException):
    pass


async def test_a_base_exception_from_fn_counts_cancelled() -> None:
    def interrupted() -> AsyncIterator[int]:
        raise Interrupt

    api = guard()
    with pytest.raises(Interrupt):
        async with api.stream(interrupted):
            pass  # pragma: no cover - never runs
    stats = adds_up(api)
    assert (stats.cancelled, stats.errors) == (1, 0)


async def test_any_async_iterable_is_a_stream() -> None:
    class Numbers:
        def __aiter__(self) -> AsyncIterator[int]:
            return Rows().rows(2)

    api = guard()
    async with api.stream(Numbers) as items:
        assert [item async for item in items] == [0, 1]
    assert adds_up(api).replies == 1


class Cursor:
    """An async iterator of a library's own: ``aclose()`` optional."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.closed = False

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> int:
        await trio.lowlevel.checkpoint()
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return self.left


class ClosingCursor(Cursor):
    async def aclose(self) -> None:
        self.closed = True
        if not self.left:
            msg = "closed twice"
            raise Down(msg)


async def test_an_iterator_without_aclose_and_one_whose_aclose_fails_late() -> None:
    api = guard(failure_threshold=1)
    async with api.stream(Cursor, 2) as items:
        assert [item async for item in items] == [1, 0]
    # Its aclose() fails once the stream has ended: the error comes out, but
    # the stream was counted already (a reply).
    with pytest.raises(Down, match="closed twice"):
        async with api.stream(ClosingCursor, 1) as items:
            assert [item async for item in items] == [0]
    assert api.state is State.ON
    stats = adds_up(api)
    assert (stats.replies, stats.errors) == (2, 0)


async def test_a_stream_is_iterated_inside_its_block_once() -> None:
    api, db = guard(), Rows()
    stream = api.stream(db.rows, 2)
    with pytest.raises(TypeError, match=r"async with guard.stream\(fn, \*args\) as"):
        async for _ in stream:  # type: ignore[attr-defined]
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"inside its block"):
        await stream.__anext__()  # type: ignore[attr-defined]
    async with stream as items:
        assert [item async for item in items] == [0, 1]
        with pytest.raises(StopAsyncIteration):
            await items.__anext__()  # ended: no second call
    with pytest.raises(RuntimeError, match=r"entered once: use guard.stream\(\)"):
        async with stream:
            pass  # pragma: no cover - refused
    assert adds_up(api).calls == 1


async def test_a_failing_clean_up_is_the_streams_error() -> None:
    api = guard(failure_threshold=1)

    async def leaky() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2  # pragma: no cover - left before
        finally:
            raise Down("while closing")

    with pytest.raises(Down, match="while closing"):  # noqa: PT012 - the block is the call
        async with api.stream(leaky) as items:
            async for _ in items:
                break
    assert api.state is State.OFF
    assert adds_up(api).errors == 1


async def test_keyed_guards_guard_streams_per_key(autojump_clock: Clock) -> None:
    db = Rows()
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("shards", max_keys=1, failure_threshold=1)
        async with hosts.stream("s1", db.rows, 2) as items:
            assert [item async for item in items] == [0, 1]
        hosts["s1"].force_off()
        with pytest.raises(breaky.BreakerOff) as off:
            async with hosts.stream("s2", db.rows, 2):
                pass  # pragma: no cover - never runs
        assert off.value.breaker == "shards[s2]"
        assert db.opened == 1
