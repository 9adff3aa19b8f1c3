"""Guards: a breaker around the caller's own calls, on the mock clock."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from support import LinkOnly, answered_calls

import breaky
from breaky import OFF, State
from breaky.testing import internals, wait_for_state

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock


class Down(Exception):  # noqa: N818 - a dependency's state, as the tests use it
    pass


class Dependency:
    """A fake remote service the guarded coroutine talks to; counts its calls."""

    def __init__(self) -> None:
        self.down = False
        self.delay = 0.0
        self.seen: list[object] = []

    async def get(self, value: object = "ok") -> object:
        self.seen.append(value)
        await trio.sleep(self.delay)
        if self.down:
            raise Down("no route")
        return value


def guard(**options: Any) -> breaky.Guard:
    options.setdefault("failure_threshold", 2)
    options.setdefault("retry_timeout", 10)
    options.setdefault("call_timeout", None)
    return breaky.Guard("api", **options)


async def trip(api: breaky.Guard, dep: Dependency) -> None:
    dep.down = True
    while api.state is State.ON:
        with pytest.raises(Down):
            await api.run(dep.get)
    dep.down = False


def assert_adds_up(api: breaky.Guard) -> None:
    stats = api.statistics()
    assert stats.calls == answered_calls(stats) + stats.pending
    assert stats.pending >= 0


# Calls while ON.


async def test_run_returns_the_result_in_the_callers_task() -> None:
    api, dep = guard(), Dependency()
    here = trio.lowlevel.current_task()

    async def where() -> object:
        return trio.lowlevel.current_task()

    assert await api.run(dep.get, "x") == "x"
    assert await api.run(where) is here
    assert api.state is State.ON
    stats = api.statistics()
    assert (stats.calls, stats.replies, stats.pending) == (2, 2, 0)


async def test_the_decorator_passes_keywords_and_keeps_the_signature() -> None:
    api = guard()

    @api
    async def charge(order: str, *, amount: int = 1) -> str:
        """Charge an order."""
        await trio.lowlevel.checkpoint()
        return f"{order}:{amount}"

    assert await charge("o1", amount=3) == "o1:3"
    assert await charge("o2") == "o2:1"
    assert charge.__name__ == "charge"
    assert charge.__doc__ == "Charge an order."
    assert (
        str(inspect.signature(charge))
        == "(order: 'str', *, amount: 'int' = 1) -> 'str'"
    )
    assert api.statistics().replies == 2


async def test_an_exception_propagates_unchanged_and_counts_one_failure() -> None:
    api, dep = guard(failure_threshold=3), Dependency()
    dep.down = True
    error = None
    try:
        await api.run(dep.get)
    except Down as exc:
        error = exc
    assert isinstance(error, Down)
    assert str(error) == "no route"
    stats = api.statistics()
    assert (stats.errors, stats.failures, stats.state) == (1, 1, State.ON)


async def test_failure_exceptions_narrow_what_counts() -> None:
    api = guard(failure_exceptions=OSError, failure_threshold=1)

    async def fails(error: Exception) -> None:
        await trio.lowlevel.checkpoint()
        raise error

    with pytest.raises(KeyError):
        await api.run(fails, KeyError("not the dependency's fault"))
    assert (api.state, api.statistics().failures) == (State.ON, 0)
    with pytest.raises(ConnectionError):
        await api.run(fails, ConnectionError())
    assert api.state is State.OFF


async def test_a_predicate_decides_what_counts() -> None:
    def server_error(error: Exception) -> bool:
        return isinstance(error, LookupError) and "5" in str(error)

    api = guard(failure_exceptions=server_error, failure_threshold=1)

    async def fails(text: str) -> None:
        await trio.lowlevel.checkpoint()
        raise LookupError(text)

    with pytest.raises(LookupError):
        await api.run(fails, "404")
    assert api.state is State.ON
    with pytest.raises(LookupError):
        await api.run(fails, "503")
    assert api.state is State.OFF


async def test_cancellation_never_counts(autojump_clock: Clock) -> None:
    api, dep = guard(failure_threshold=1), Dependency()
    dep.delay = 10
    with trio.move_on_after(1):
        await api.run(dep.get)
    stats = api.statistics()
    assert (stats.state, stats.failures, stats.cancelled, stats.pending) == (
        State.ON,
        0,
        1,
        0,
    )


async def test_a_wrong_call_is_an_error_but_no_failure() -> None:
    api = guard(failure_threshold=1, call_timeout=1)

    async def takes_one(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x

    with pytest.raises(TypeError):
        await api.run(takes_one, 1, 2)  # type: ignore[call-arg]
    lean = guard(failure_threshold=1)
    with pytest.raises(TypeError):
        await lean.run(takes_one, 1, 2)  # type: ignore[call-arg]
    for g in (api, lean):
        stats = g.statistics()
        assert (stats.state, stats.errors, stats.failures) == (State.ON, 1, 0)


async def test_call_timeout_cancels_and_raises_call_timeout(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(call_timeout=2, failure_threshold=2), Dependency()
    dep.delay = 5
    start = trio.current_time()
    with pytest.raises(breaky.CallTimeout, match=r"guard 'api'.*\(2 s\)"):
        await api.run(dep.get)
    assert trio.current_time() - start == pytest.approx(2)
    stats = api.statistics()
    assert (stats.timeouts, stats.failures, stats.state) == (1, 1, State.ON)
    # The call's own timeout wins over the policy's, None included; its
    # success resets the guard's failures in a row.
    assert await api.run(dep.get, "late", timeout=None) == "late"
    assert api.statistics().failures == 0
    for _ in range(2):
        with pytest.raises(breaky.CallTimeout):
            await api.run(dep.get, timeout=1)
    assert api.state is State.OFF


async def test_a_slow_call_counts_one_failure_and_returns(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(slow_call_duration=1, failure_threshold=2), Dependency()
    dep.delay = 2
    assert await api.run(dep.get, "slow") == "slow"
    assert (api.statistics().slow_calls, api.statistics().failures) == (1, 1)
    dep.delay = 0.5
    assert await api.run(dep.get, "quick") == "quick"
    # A quick success resets the guard's failures in a row.
    assert api.statistics().failures == 0


# OFF.


async def test_off_is_answered_after_one_checkpoint_and_fn_never_runs(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    seen = len(dep.seen)
    with trio.testing.assert_checkpoints():
        assert await api.run(dep.get) is OFF
    assert len(dep.seen) == seen
    assert api.statistics().off == 1
    assert_adds_up(api)


async def test_an_off_answer_cancelled_in_its_checkpoint_counts_as_cancelled(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    with trio.CancelScope() as scope:
        scope.cancel()
        await api.run(dep.get)
    stats = api.statistics()
    assert (stats.off, stats.cancelled) == (0, 1)
    assert_adds_up(api)


async def test_the_raising_form_raises_breaker_off_naming_the_guard(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    assert await api.raising.run(dep.get, "x") == "x"
    assert api.raising is api.raising
    assert "raising" in repr(api.raising)

    @api.raising
    async def fetch() -> object:
        return await dep.get("y")

    assert await fetch() == "y"
    await trip(api, dep)
    with pytest.raises(breaky.BreakerOff, match=r"guard 'api' .* OFF") as info:
        await api.raising.run(dep.get)
    assert (info.value.breaker, info.value.shed) == ("api", False)
    with pytest.raises(breaky.BreakerOff):
        await fetch()
    assert api.statistics().off == 2


async def test_failure_force_off_and_reset(autojump_clock: Clock) -> None:
    api, dep = guard(), Dependency()
    api.failure()
    assert api.statistics().failures == 1
    api.force_off()
    assert api.state is State.FORCED_OFF
    await trio.sleep(100)
    assert await api.run(dep.get) is OFF
    api.reset()
    # Reset while OFF: the next call is a trial, at once.
    assert api.state is State.OFF
    assert await api.run(dep.get, "trial") == "trial"
    assert api.state is State.ON
    assert api.statistics().failures == 0
    api.failure()
    api.reset()
    assert (api.state, api.statistics().failures) == (State.ON, 0)


# Trials (half-open).


async def test_after_the_wait_one_trial_runs_and_the_others_get_off(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    await trio.sleep(9)
    assert await api.run(dep.get) is OFF  # not yet
    await trio.sleep(1)
    dep.delay = 1
    answers: list[object] = []
    seen = len(dep.seen)

    async def caller(n: int) -> None:
        answers.append(await api.run(dep.get, n))

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(caller, n)
    assert len(dep.seen) == seen + 1  # only the trial reached the dependency
    assert sorted(answers, key=str).count(OFF) == 49
    assert api.state is State.ON
    stats = api.statistics()
    assert (stats.retries, stats.failures) == (1, 0)
    assert_adds_up(api)


async def test_a_failed_trial_waits_again_with_backoff_cap_and_jitter(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(retry_backoff=2, max_retry_timeout=30), Dependency()
    await trip(api, dep)
    dep.down = True
    waits = []
    for _ in range(4):
        start = trio.current_time()
        while True:
            try:
                if await api.run(dep.get) is not OFF:
                    break
            except Down:
                break
            await trio.sleep(0.5)
        waits.append(trio.current_time() - start)
    assert waits == pytest.approx([10, 20, 30, 30], abs=0.5)
    assert api.state is State.OFF


async def test_trial_calls_must_all_succeed_one_at_a_time(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(trial_calls=3), Dependency()
    await trip(api, dep)
    await trio.sleep(10)
    for n in range(2):
        assert await api.run(dep.get, n) == n
        assert api.state is State.OFF
    assert await api.run(dep.get, "third") == "third"
    assert api.state is State.ON
    # A failed trial starts the count of trials again, after the next wait.
    await trip(api, dep)
    await trio.sleep(10)
    assert await api.run(dep.get) == "ok"
    dep.down = True
    with pytest.raises(Down):
        await api.run(dep.get)
    dep.down = False
    assert await api.run(dep.get) is OFF
    await trio.sleep(10)
    for _ in range(3):
        assert api.state is State.OFF
        assert await api.run(dep.get) == "ok"
    assert api.state is State.ON


async def test_a_cancelled_trial_frees_its_place(autojump_clock: Clock) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    await trio.sleep(10)
    dep.delay = 100
    with trio.move_on_after(1):
        await api.run(dep.get)
    assert api.statistics().cancelled == 1
    dep.delay = 0
    # No wait: the next call is the trial.
    assert await api.run(dep.get, "next") == "next"
    assert api.state is State.ON


async def test_a_timed_out_trial_fails(autojump_clock: Clock) -> None:
    api, dep = guard(call_timeout=1), Dependency()
    await trip(api, dep)
    await trio.sleep(10)
    dep.delay = 5
    with pytest.raises(breaky.CallTimeout):
        await api.run(dep.get)
    assert api.state is State.OFF
    assert await api.run(dep.get) is OFF


async def test_a_trial_raising_what_does_not_count_is_a_success(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_exceptions=Down)
    dep = Dependency()
    await trip(api, dep)
    await trio.sleep(10)

    async def not_found() -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("404: the dependency answered")

    with pytest.raises(KeyError):
        await api.run(not_found)
    assert api.state is State.ON


async def test_a_trial_that_was_a_wrong_call_frees_its_place(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    await trio.sleep(10)
    with pytest.raises(TypeError):
        await api.run(dep.get, 1, 2)  # type: ignore[call-arg]
    assert await api.run(dep.get, "next") == "next"
    assert api.state is State.ON


async def test_a_trial_outliving_force_off_changes_nothing(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    await trio.sleep(10)
    dep.delay = 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, dep.get)
        await trio.testing.wait_all_tasks_blocked()
        api.force_off()
    assert api.state is State.FORCED_OFF


# The bulkhead.


async def test_max_concurrent_with_max_queued_waits_in_order_then_sheds(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=2, max_queued=2, call_timeout=100)
    running: list[int] = []
    done = {n: trio.Event() for n in range(6)}

    async def work(n: int) -> int:
        running.append(n)
        await done[n].wait()
        running.remove(n)
        return n

    answers: dict[int, object] = {}

    async def caller(n: int) -> None:
        answers[n] = await api.run(work, n)

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(caller, n)
            await trio.testing.wait_all_tasks_blocked()
        assert running == [0, 1]
        assert api.statistics().pending == 4
        # A freed place goes to the call that waited longest.
        done[1].set()
        await trio.testing.wait_all_tasks_blocked()
        assert running == [0, 2]
        done[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert running == [2, 3]
        done[2].set()
        done[3].set()
    assert [answers[n] for n in range(6)] == [0, 1, 2, 3, OFF, OFF]
    stats = api.statistics()
    assert (stats.shed, stats.off, stats.failures, stats.state) == (
        2,
        0,
        0,
        State.ON,
    )


async def test_a_wait_for_a_place_that_reaches_the_timeout_is_shed(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=1, call_timeout=5, failure_threshold=1)
    seen: list[str] = []

    async def work(name: str, seconds: float) -> str:
        seen.append(name)
        await trio.sleep(seconds)
        return name

    answers: dict[str, object] = {}

    async def caller(name: str, seconds: float, **options: Any) -> None:
        answers[name] = await api.run(work, name, seconds, **options)

    async with trio.open_nursery() as nursery:
        # Holds the one place for 6 s (no timeout of its own).
        nursery.start_soon(functools.partial(caller, "long", 6, timeout=None))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(caller, "waits too long", 1)  # its 5 s end in line
        await trio.sleep(2)
        nursery.start_soon(caller, "fits", 0.5)  # gets the place at 6 s of 7
    assert answers == {"long": "long", "waits too long": OFF, "fits": "fits"}
    assert seen == ["long", "fits"]
    stats = api.statistics()
    assert (stats.shed, stats.timeouts, stats.state) == (1, 0, State.ON)


async def test_a_raising_shed_says_so(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, max_queued=1, call_timeout=3)
    release = trio.Event()

    async def hold() -> None:
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, hold)
        nursery.start_soon(api.run, hold)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(breaky.BreakerOff, match="shed") as info:
            await api.raising.run(hold)
        assert info.value.shed
        release.set()
    assert api.statistics().shed == 1


async def test_a_caller_cancelled_in_line_leaves_it(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, max_queued=5, call_timeout=None)
    release = trio.Event()
    served: list[int] = []

    async def work(n: int) -> None:
        served.append(n)
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, work, 0)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await api.run(work, 1)
        nursery.start_soon(api.run, work, 2)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert served == [0, 2]
    stats = api.statistics()
    assert (stats.cancelled, stats.replies, stats.pending) == (1, 2, 0)


async def test_overload_never_trips_a_guard(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=4, max_queued=8, call_timeout=2, failure_threshold=1)

    async def busy() -> str:
        await trio.sleep(0.5)
        return "ok"

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(api.run, busy)
    stats = api.statistics()
    assert stats.state is State.ON
    assert stats.shed > 0
    assert stats.replies > 0
    assert (stats.failures, stats.timeouts, stats.trips) == (0, 0, 0)
    assert stats.calls == stats.replies + stats.shed


# The failure rate.


async def test_the_failure_rate_trips_after_minimum_calls(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_rate=0.5, minimum_calls=4, failure_window=60)
    dep = Dependency()
    for down in (True, False, True):
        dep.down = down
        with contextlib.suppress(Down):
            await api.run(dep.get)
    assert api.state is State.ON  # 2 of 3: below minimum_calls
    dep.down = True
    with pytest.raises(Down):
        await api.run(dep.get)
    assert api.state is State.OFF  # 3 of 4


async def test_the_failure_rate_forgets_outside_the_window(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_rate=0.5, minimum_calls=2, failure_window=10)
    dep = Dependency()
    dep.down = True
    with pytest.raises(Down):
        await api.run(dep.get)
    assert api.statistics().failures == 1
    await trio.sleep(10)
    assert api.statistics().failures == 0
    dep.down = False
    await api.run(dep.get)
    dep.down = True
    with pytest.raises(Down):
        await api.run(dep.get)
    assert api.state is State.OFF  # 1 of 2 in the window: the old one is gone


async def test_the_failure_rate_rule_for_a_resource_breaker(
    autojump_clock: Clock,
) -> None:
    async def echo(inbox: breaky.Inbox[str, str], *, task_status: Any) -> None:
        task_status.started()
        async for request in inbox:
            if request.message == "fail":
                request.fail(ConnectionError())
            else:
                request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "db",
            echo,
            failure_rate=0.5,
            minimum_calls=4,
            failure_window=30,
            failure_exceptions=OSError,
        )
        assert await db.call("ok") == "ok"
        with pytest.raises(ConnectionError):
            await db.call("fail")
        assert await db.call("ok") == "ok"
        assert db.state is State.ON
        with pytest.raises(ConnectionError):
            await db.call("fail")
        assert db.state is State.OFF  # 2 of 4 reach the rate
        assert db.statistics().trips == 1


# A guard in a supervisor.


async def test_a_supervisors_guard_is_listed_watched_and_stopped(
    autojump_clock: Clock,
) -> None:
    dep = Dependency()
    async with breaky.open_supervisor() as sup:
        changes = sup.subscribe()
        api = sup.guard("api", failure_threshold=1, retry_timeout=5, call_timeout=None)
        assert "api" in sup
        assert sup["api"] is api
        assert list(sup) == ["api"]
        with pytest.raises(ValueError, match="'api' is already running"):
            sup.guard("api")

        async def resource(inbox: Any, *, task_status: Any) -> None:
            task_status.started()
            await trio.sleep_forever()

        with pytest.raises(ValueError, match="'api' is already running"):
            await sup.start_circuit_breaker("api", resource)
        dep.down = True
        with pytest.raises(Down):
            await api.run(dep.get)
        change = changes.receive_nowait()
        assert (change.breaker, change.old, change.new) == ("api", State.ON, State.OFF)
        assert change.reason == "a call failed with Down"
        dep.down = False
        await trio.sleep(5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_state, api, State.ON)
            await trio.testing.wait_all_tasks_blocked()
            assert await api.run(dep.get) == "ok"
    assert api.state is State.STOPPED
    assert await api.run(dep.get) is OFF
    with pytest.raises(RuntimeError, match="closed"):
        sup.guard("late")


async def test_stopping_a_guard_by_name() -> None:
    async with breaky.open_supervisor() as sup:
        api = sup.guard("api")
        await sup.stop_circuit_breaker("api")
        assert api.state is State.STOPPED
        assert "api" not in sup
        sup.guard("api")  # the name is free again


async def test_a_module_level_guard_works_in_any_trio_run() -> None:
    api = guard()

    @api
    async def ping() -> str:
        await trio.lowlevel.checkpoint()
        return "pong"

    assert await ping() == "pong"
    assert trio.run is not None  # made before any run; used in this one
    assert api.statistics().replies == 1


async def test_log_records_name_the_guard(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    api, dep = guard(), Dependency()
    await trip(api, dep)
    await trio.sleep(10)
    dep.down = True
    with pytest.raises(Down):
        await api.run(dep.get)
    await trio.sleep(10)
    with pytest.raises(Down):
        await api.run(dep.get)
    dep.down = False
    await trio.sleep(10)
    await api.run(dep.get)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        (
            "guard 'api' turned OFF after 2 failures "
            "(last: a call failed with Down); next trial call in 10 s"
        ),
        "guard 'api': the trial call failed",
        "guard 'api': the trial call failed again (Down: no route)",
        "guard 'api' is ON (a trial call succeeded), after 30 s OFF and 3 attempts",
    ]
    first_trial = caplog.records[1]
    assert first_trial.exc_info is not None
    assert caplog.records[2].exc_info is None
    assert all(r.breaker == "api" for r in caplog.records)  # type: ignore[attr-defined]


# Bad input.


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"start_timeout": 3}, ValueError, r"start_timeout means nothing for a guard"),
        ({"max_queued": 3}, ValueError, r"max_queued needs max_concurrent"),
        ({"trial_calls": 0}, ValueError, r"trial_calls must be an int >= 1, got 0"),
        ({"max_concurrent": 0}, ValueError, r"max_concurrent .* got 0"),
        ({"failure_rate": 0.5}, ValueError, r"failure_rate needs a failure_window"),
        (
            {"failure_rate": 1.5, "failure_window": 1},
            ValueError,
            r"failure_rate must be a number > 0 and <= 1.*got 1.5",
        ),
        ({"failure_rate": "1"}, TypeError, r"failure_rate must be .* got '1'"),
        ({"minimum_calls": 0}, ValueError, r"minimum_calls must be an int >= 1"),
        ({"failure_treshold": 3}, TypeError, r"unexpected option 'failure_treshold'"),
        ({"policy": "fast"}, TypeError, r"policy must be a breaky.Policy or None"),
    ],
)
def test_bad_options_are_refused_clearly(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        breaky.Guard("api", **options)


def test_a_guard_needs_a_str_name_and_decorates_async_functions_only() -> None:
    with pytest.raises(TypeError, match=r"name must be a str, got 3"):
        breaky.Guard(3)  # type: ignore[arg-type]

    def sync() -> None:
        pass

    with pytest.raises(TypeError, match=r"decorates an async function"):
        guard()(sync)  # type: ignore[arg-type]
    # A sync wrapper of an async function is fine, as trio allows.
    assert guard()(functools.partial(Dependency().get, "x")) is not None


async def test_options_a_resource_breaker_cannot_use_are_refused() -> None:
    async def resource(inbox: Any, *, task_status: Any) -> None:
        task_status.started()

    async with breaky.open_supervisor() as sup:
        with pytest.raises(TypeError, match=r"'ssl'.*functools\.partial\(fn, name="):
            await sup.start_circuit_breaker("db", resource, ssl=True)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match=r"trial_calls means nothing for a reso"):
            await sup.start_circuit_breaker("db", resource, trial_calls=2)
        with pytest.raises(ValueError, match=r"inbox.serve\(handler, concurrency=N\)"):
            await sup.start_circuit_breaker(
                "db", resource, policy=breaky.Policy(max_concurrent=4)
            )
        assert "db" not in sup


async def test_views_and_reprs() -> None:
    api = guard(failure_threshold=7)
    assert repr(api) == "<breaky.Guard 'api' ON>"
    assert api.policy.failure_threshold == 7
    assert api.name == "api"


async def test_a_raising_call_shed_in_line_says_so(autojump_clock: Clock) -> None:
    api = guard(max_concurrent=1, call_timeout=2)
    release = trio.Event()

    async def hold() -> None:
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(api.run, hold, timeout=None))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(breaky.BreakerOff, match="shed"):
            await api.raising.run(hold)  # waits 2 s in line, then shed
        release.set()
    assert api.statistics().shed == 1


async def test_a_refusal_cancelled_in_its_checkpoint_counts_as_cancelled(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()
    await trip(api, dep)
    with trio.CancelScope() as scope:
        scope.cancel()
        await api.raising.run(dep.get)
    stats = api.statistics()
    assert (stats.off, stats.cancelled) == (0, 1)
    assert_adds_up(api)


async def test_the_decorator_answers_off_with_keywords_too(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(), Dependency()

    @api
    async def fetch(*, value: object) -> object:
        return await dep.get(value)

    assert await fetch(value=1) == 1
    await trip(api, dep)
    assert await fetch(value=2) is OFF


async def test_a_success_after_the_trip_changes_nothing(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_rate=0.5, minimum_calls=1, failure_window=60)
    dep = Dependency()
    release = trio.Event()

    async def slow_ok() -> str:
        await release.wait()
        return "late"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, slow_ok)
        await trio.testing.wait_all_tasks_blocked()
        dep.down = True
        with pytest.raises(Down):
            await api.run(dep.get)
        assert api.state is State.OFF
        release.set()
    assert api.state is State.OFF
    assert api.statistics().replies == 1


async def test_a_guard_follows_what_its_fleet_says(autojump_clock: Clock) -> None:
    from breaky._core.fleet import View  # noqa: PLC0415 - the seam, as a fleet

    dep = Dependency()
    fleet = LinkOnly()
    async with breaky.open_supervisor(fleet=fleet) as sup:
        api = sup.guard("api", retry_timeout=5, call_timeout=None)
        (member,) = internals(sup).link.members()
        assert (member.name, member.state, member.sees_off) == ("api", State.ON, False)
        member.tell(View.OFF, "fleet OFF: 2 of 3 instances report OFF")
        assert api.state is State.OFF
        await trio.sleep(60)
        assert await api.run(dep.get) is OFF  # held: another instance probes
        member.tell(View.PROBE, "fleet OFF: you probe")
        assert await api.run(dep.get) is OFF  # the prober waits one period
        await trio.sleep(5)
        assert await api.run(dep.get, "trial") == "trial"
        assert api.state is State.ON
        assert api.statistics().fleet_holds == 1
        member.tell(View.OFF, "fleet OFF again")
        member.tell(View.ON, "fleet ON: web-2 recovered")
        await trio.sleep(1)  # within the spread
        assert await api.run(dep.get, "soon") == "soon"


async def test_calls_waiting_for_a_place_get_off_when_the_guard_trips(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=1, max_queued=5, call_timeout=None, failure_threshold=1)
    release = trio.Event()
    ran: list[str] = []

    async def hold() -> None:
        ran.append("hold")
        await release.wait()

    async def other() -> None:
        ran.append("other")

    answers: list[object] = []

    async def waiter() -> None:
        answers.append(await api.run(other))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, hold)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        api.failure()  # trips: the line is answered OFF, never run
        await trio.testing.wait_all_tasks_blocked()
        assert answers == [OFF, OFF, OFF]
        release.set()
    assert ran == ["hold"]
    stats = api.statistics()
    assert (stats.off, stats.replies, stats.pending) == (3, 1, 0)


async def test_a_call_whose_timeout_trips_the_guard_hands_no_place_on(
    autojump_clock: Clock,
) -> None:
    # Found by the model-based test: the timed-out call gave its place to the
    # first in line before its timeout was counted, so that one call ran
    # after the guard had turned OFF.
    api = guard(max_concurrent=1, max_queued=1, call_timeout=2, failure_threshold=1)
    seen: list[str] = []

    async def work(name: str) -> str:
        seen.append(name)
        await trio.sleep(10)
        return name

    answers: dict[str, object] = {}

    async def caller(name: str) -> None:
        with contextlib.suppress(breaky.CallTimeout):
            answers[name] = await api.run(work, name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "slow")
        await trio.sleep(1)
        nursery.start_soon(caller, "in line")  # its own timeout is at 3 s
    assert seen == ["slow"]
    assert answers == {"in line": OFF}
    stats = api.statistics()
    assert (stats.state, stats.timeouts, stats.off, stats.shed) == (State.OFF, 1, 1, 0)
    assert_adds_up(api)


# Found in review: each of these failed before its fix.


async def test_a_wait_in_line_is_neither_slow_nor_a_failed_timeout(
    autojump_clock: Clock,
) -> None:
    slow = guard(max_concurrent=1, max_queued=10, slow_call_duration=1)
    timed = guard(max_concurrent=1, max_queued=10, call_timeout=1)

    async def work() -> str:
        await trio.sleep(0.6)
        return "ok"

    answers: list[object] = []

    async def caller(g: breaky.Guard) -> None:
        with contextlib.suppress(breaky.CallTimeout):
            answers.append(await g.run(work))

    for g in (slow, timed):
        for _ in range(3):
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(caller, g)
    assert answers.count("ok") >= 18 + 3
    stats = slow.statistics()
    assert (stats.state, stats.slow_calls, stats.failures) == (State.ON, 0, 0)
    stats = timed.statistics()
    assert (stats.state, stats.failures, stats.trips) == (State.ON, 0, 0)
    assert stats.timeouts > 0  # its callers still got CallTimeout
    assert_adds_up(timed)


async def test_a_place_handed_as_the_guard_turns_off_runs_nothing(
    autojump_clock: Clock,
) -> None:
    api = guard(max_concurrent=1, max_queued=1)
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")
        await trio.sleep(1)
        api.force_off()  # in the same step the place is handed on

    async def second() -> None:
        ran.append("second")

    answers: list[object] = []

    async def waiter() -> None:
        answers.append(await api.run(second))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.run, first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
    assert ran == ["first"]
    assert answers == [OFF]
    assert_adds_up(api)


async def test_failure_after_a_reply_is_one_outcome_under_the_rate_rule(
    autojump_clock: Clock,
) -> None:
    api = guard(failure_rate=0.6, minimum_calls=10, failure_window=60)
    dep = Dependency()
    for _ in range(10):
        assert await api.run(dep.get) == "ok"
        api.failure()  # the reply was bad: that call failed
    assert api.state is State.OFF
    api.reset()
    assert await api.run(dep.get) == "ok"  # the trial: ON, a fresh count
    api.failure()  # no success in the window to amend: a failure of its own
    assert api.statistics().failures == 1


async def test_reaching_exactly_the_failure_rate_trips(autojump_clock: Clock) -> None:
    api = guard(failure_rate=0.28, minimum_calls=25, failure_window=60)
    dep = Dependency()
    for _ in range(18):
        await api.run(dep.get)
    dep.down = True
    for _ in range(7):  # 7 of 25 is 0.28 exactly, but 0.28 * 25 is not 7
        with pytest.raises(Down):
            await api.run(dep.get)
    assert api.state is State.OFF


async def test_a_bad_timeout_makes_no_call() -> None:
    api, dep = guard(), Dependency()
    with pytest.raises(ValueError, match="timeout"):
        await api.run(dep.get, timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        await api.run(dep.get, timeout="1")  # type: ignore[arg-type]
    assert (api.statistics().calls, api.statistics().pending) == (0, 0)


def test_a_module_level_guard_in_a_new_trio_run_tries_once() -> None:
    api, dep = guard(retry_timeout=5, failure_threshold=2), Dependency()

    def run(fn: Any, *args: Any) -> Any:
        return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))

    async def trip_it() -> None:
        await trip(api, dep)

    async def call(value: object) -> object:
        return await api.run(dep.get, value)

    async def fail_once() -> None:
        dep.down = True
        with pytest.raises(Down):
            await api.run(dep.get)
        dep.down = False

    async def failures() -> int:
        return api.statistics().failures

    run(trip_it)
    # Another run: another clock with an offset of its own, so how long the
    # guard has waited is unknown. Its first call is the one trial.
    assert run(call, "back") == "back"
    assert api.state is State.ON
    # A failure counted in one run still counts in the next.
    run(fail_once)
    assert run(failures) == 1
    run(fail_once)
    assert api.state is State.OFF  # the second one reached the threshold


async def test_a_guard_with_a_bulkhead_trips_and_recovers(
    autojump_clock: Clock,
) -> None:
    api, dep = guard(max_concurrent=2, max_queued=2), Dependency()
    dep.down = True
    with pytest.raises(Down):
        await api.run(dep.get)  # one failure, no change of state
    assert api.state is State.ON
    with pytest.raises(Down):
        await api.run(dep.get)
    assert api.state is State.OFF
    dep.down = False
    await trio.sleep(10)
    assert await api.run(dep.get, "trial") == "trial"  # takes no place
    assert api.state is State.ON
    async with trio.open_nursery() as nursery:  # every place is free again
        for n in range(4):
            nursery.start_soon(api.run, dep.get, n)
    stats = api.statistics()
    assert (stats.shed, stats.replies, stats.pending) == (0, 5, 0)
