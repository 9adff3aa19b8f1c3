"""What a new user passes by mistake: said at once, never counted as a failure.

A sync function given to a guard, a ``functools.wraps`` wrapper judged by
what it wraps, an empty name, a misspelt option of a Policy (issue 21,
points 3, 4 and 9).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pytest
import trio

import breaky
from breaky import State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from trio.testing import MockClock as Clock


def blocking(x: int) -> int:
    """A blocking client's function: what a user moving to Trio has."""
    return x * 2


@functools.wraps(blocking)
async def in_thread(x: int) -> int:
    """The run-in-thread adapter such a user writes, with functools.wraps."""
    return await trio.to_thread.run_sync(blocking, x)


# The paths a call can take through a guard: the lean one (no timeout, no
# line), the timed one, the raising one, the decorator's, with a keyword.
PATHS: dict[str, Callable[[breaky.Guard, Callable[..., Any]], Awaitable[object]]] = {
    "lean run": lambda api, fn: api.run(fn, 3),
    "timed run": lambda api, fn: api.run(fn, 3, timeout=5),
    "raising run": lambda api, fn: api.raising.run(fn, 3),
    "decorated": lambda api, fn: api(functools.partial(fn))(3),
    "decorated, keyword": lambda api, fn: api(functools.partial(fn))(x=3),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_sync_function_is_a_wrong_call_never_a_failure(path: str) -> None:
    api = breaky.Guard("api", failure_threshold=1, call_timeout=None)
    with pytest.raises(TypeError, match=r"int, not an awaitable.*async function"):
        await PATHS[path](api, blocking)
    assert api.state is State.ON  # with failure_threshold=1, a failure trips
    stats = api.statistics()
    assert (stats.calls, stats.errors, stats.failures, stats.pending) == (1, 1, 0, 0)
    # The message says how to guard a blocking function after all.
    with pytest.raises(TypeError, match=r"trio\.to_thread\.run_sync"):
        await api.run(blocking, 3)  # type: ignore[arg-type]


async def test_a_sync_function_as_the_trial_leaves_no_trial_behind(
    autojump_clock: Clock,
) -> None:
    api = breaky.Guard("api", failure_threshold=1, retry_timeout=10)
    api.failure()
    await trio.sleep(10)
    with pytest.raises(TypeError, match="not an awaitable"):
        await api.run(blocking, 3)  # type: ignore[arg-type]
    # The trial was withdrawn, not failed nor kept: the next call is the trial.
    assert await api.run(in_thread, 3) == 6
    assert api.state is State.ON


class Ready:
    """An awaitable that is no coroutine (as some libraries return)."""

    def __await__(self) -> Generator[Any, None, int]:
        yield from trio.lowlevel.checkpoint().__await__()  # noqa: ASYNC105
        return 7


@pytest.mark.parametrize("path", list(PATHS))
async def test_any_awaitable_is_a_call(path: str) -> None:
    api = breaky.Guard("api", call_timeout=None)

    def make(x: int) -> Ready:
        return Ready()

    assert await PATHS[path](api, make) == 7
    assert api.statistics().replies == 1


# Point 4: an async function is judged on itself, then on what it wraps.


async def test_the_decorator_takes_an_async_wrapper_of_a_sync_function() -> None:
    api = breaky.Guard("api")
    assert await api(in_thread)(3) == 6
    assert await api.raising(in_thread)(4) == 8
    assert await api.run(in_thread, 5) == 10
    assert api.statistics().replies == 3


async def test_a_resource_and_a_handler_may_be_async_wrappers_too() -> None:
    @functools.wraps(blocking)
    async def resource(
        inbox: breaky.Inbox[int, int],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()

        @functools.wraps(blocking)
        async def handler(request: breaky.Request[int, int]) -> None:
            request.reply(await in_thread(request.message))

        await inbox.serve(handler)

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource)
        assert await db.call(21) == 42


def sync_handler(request: object) -> None:
    """Not an async function."""


@functools.wraps(sync_handler)
def sync_wrapper(request: object) -> None:
    """A sync wrapper of a sync function."""


@pytest.mark.parametrize("fn", [blocking, sync_wrapper, "blocking", None])
async def test_sync_functions_are_still_refused_everywhere(
    fn: Any, autojump_clock: Clock
) -> None:
    with pytest.raises(TypeError, match=r"decorates an async function \(async def\)"):
        breaky.Guard("api")(fn)
    refused: list[TypeError] = []

    async def resource(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        try:
            await inbox.serve(fn)
        except TypeError as exc:
            refused.append(exc)
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        with pytest.raises(TypeError, match=r"fn must be an async function"):
            await sup.start_circuit_breaker("db", fn)
        await sup.start_circuit_breaker("db", resource)
    (error,) = refused
    assert str(error).startswith("handler must be an async function taking a request")


async def test_a_coroutine_object_is_refused_and_closed() -> None:
    api = breaky.Guard("api")

    async def fetch() -> None:
        pass  # pragma: no cover - never run

    coroutine = fetch()
    with pytest.raises(TypeError, match=r"pass .*fetch, not .*fetch\(\)"):
        api(coroutine)  # type: ignore[arg-type]
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning


# Point 9: names, and a Policy's options.


@pytest.mark.parametrize("name", ["", 3])
async def test_a_name_is_a_non_empty_str(name: Any) -> None:
    error = TypeError if name == 3 else ValueError
    match = rf"name must be a {'' if name == 3 else 'non-empty '}str, got {name!r}"
    with pytest.raises(error, match=match):
        breaky.Guard(name)

    async def resource(inbox: Any, *, task_status: Any) -> None:
        task_status.started()  # pragma: no cover - never started

    async with breaky.open_supervisor() as sup:
        for make in (
            lambda: sup.guard(name),
            lambda: sup.keyed_guard(name),
            lambda: sup.keyed_breaker(name, resource),
        ):
            with pytest.raises(error, match=match):
                make()
        with pytest.raises(error, match=match):
            await sup.start_circuit_breaker(name, resource)
        assert not list(sup)


def test_a_policy_lists_its_options_as_a_guard_does() -> None:
    with pytest.raises(TypeError) as by_guard:
        breaky.Guard("api", retry_time=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError) as by_policy:
        breaky.Policy(retry_time=3)  # type: ignore[call-arg]
    message = str(by_policy.value)
    assert message == str(by_guard.value)
    assert message.startswith(
        "unexpected option 'retry_time' (did you mean 'retry_timeout'?): "
        "the options are the fields of breaky.Policy (failure_threshold, "
    )
    with pytest.raises(TypeError, match=r"unexpected option 'colour': the options"):
        breaky.Policy(colour=3)  # type: ignore[call-arg]
