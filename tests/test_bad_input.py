"""Bad input gets a clear error naming what was wrong, before anything starts."""

from __future__ import annotations

import gc
import math
import re

import pytest
import trio
import trio.testing

import breaky

NAN, INF = math.nan, math.inf


def names(parameter: str, value: object) -> str:
    """A ``match=`` pattern: the parameter's name, then the value's repr."""
    return rf"{parameter}\b.*{re.escape(repr(value))}"


async def echo(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    async for request in inbox:
        request.reply(request.message)


async def check_still_works(sup: breaky.Supervisor) -> None:
    good = await sup.start_circuit_breaker("good", echo)
    assert await good.call("ping") == "ping"
    await sup.stop_circuit_breaker("good")


BAD_OPTIONS = [
    ("failure_threshold", 0, ValueError),
    ("failure_threshold", -1, ValueError),
    ("failure_threshold", 1.5, TypeError),
    ("failure_threshold", True, TypeError),
    ("failure_threshold", "3", TypeError),
    ("retry_timeout", 0, ValueError),
    ("retry_timeout", -1, ValueError),
    ("retry_timeout", NAN, ValueError),
    ("retry_timeout", INF, ValueError),
    ("retry_timeout", True, TypeError),
    ("retry_timeout", "1", TypeError),
    ("call_timeout", 0, ValueError),
    ("call_timeout", -1, ValueError),
    ("call_timeout", NAN, ValueError),
    ("call_timeout", INF, ValueError),
    ("call_timeout", True, TypeError),
]


@pytest.mark.parametrize(("option", "value", "error"), BAD_OPTIONS)
async def test_bad_breaker_options_are_refused(option, value, error):
    started = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        started.append(True)
        await echo(inbox, task_status=task_status)

    async with breaky.open_supervisor() as sup:
        with pytest.raises(error, match=names(option, value)):
            await sup.start_circuit_breaker("x", resource, **{option: value})
        assert "x" not in sup
        assert len(sup) == 0
        await trio.testing.wait_all_tasks_blocked()
        assert started == []
        await check_still_works(sup)


async def test_good_edge_options_are_accepted():
    async with breaky.open_supervisor(shutdown_timeout=0) as sup:
        b = await sup.start_circuit_breaker(
            "x", echo, failure_threshold=1, retry_timeout=1e-9, call_timeout=None
        )
        assert await b.call(1, timeout=None) == 1


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (True, TypeError),
        ("5", TypeError),
    ],
)
async def test_bad_shutdown_timeout_is_refused(value, error):
    with pytest.raises(error, match=names("shutdown_timeout", value)):
        async with breaky.open_supervisor(shutdown_timeout=value):
            pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (True, TypeError),
        ("x", TypeError),
    ],
)
async def test_bad_call_timeout_is_refused_before_queueing(value, error):
    seen = []

    async def recorder(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async for request in inbox:
            seen.append(request.message)
            request.reply(request.message)

    async with breaky.open_supervisor() as sup:
        b = await sup.start_circuit_breaker("x", recorder)
        with pytest.raises(error, match=names("timeout", value)):
            await b.call("bad", timeout=value)
        assert await b.call("good") == "good"
        assert seen == ["good"]


async def test_bad_call_timeout_is_refused_while_off_too(autojump_clock):
    async def broken(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        raise OSError("no connection")

    async with breaky.open_supervisor() as sup:
        b = await sup.start_circuit_breaker("x", broken, failure_threshold=1)
        assert b.state is breaky.State.OFF
        with pytest.raises(ValueError, match=names("timeout", -1)):
            await b.call("bad", timeout=-1)


async def no_task_status(inbox):
    pass  # pragma: no cover


def sync_resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
    pass  # pragma: no cover


async def two_args(inbox, user, password, *, task_status=trio.TASK_STATUS_IGNORED):
    pass  # pragma: no cover


async def needs_a_keyword(inbox, *, ssl, task_status=trio.TASK_STATUS_IGNORED):
    pass  # pragma: no cover


async def needs_two_and_task_status(inbox, user, password, *, task_status):
    pass  # pragma: no cover


BAD_FUNCTIONS = [
    (no_task_status, (), r"accept.*task_status"),
    (sync_resource, (), "async"),
    (two_args, ("only user",), r"cannot be called.*'password'$"),
    (two_args, ("user", "password", "extra"), "cannot be called"),
    (echo, ("unexpected",), "cannot be called"),
    ("not a function", (), "async function"),
    (
        needs_a_keyword,
        (),
        (
            r"missing a required.*'ssl'; pass keyword arguments for the resource "
            r"function with functools\.partial\(fn, name=value\)$"
        ),
    ),
    # Its task_status is no argument to bind with functools.partial.
    (needs_two_and_task_status, ("user",), r"cannot be called.*'password'$"),
]


@pytest.mark.parametrize(("fn", "args", "message"), BAD_FUNCTIONS)
async def test_bad_resource_functions_are_refused(fn, args, message):
    async with breaky.open_supervisor() as sup:
        with pytest.raises(TypeError, match=message):
            await sup.start_circuit_breaker("x", fn, *args)
        assert "x" not in sup
        assert len(sup) == 0
        await check_still_works(sup)


async def test_a_duplicate_name_is_refused():
    async with breaky.open_supervisor() as sup:
        first = await sup.start_circuit_breaker("db", echo)
        with pytest.raises(ValueError, match=names("named", "db")):
            await sup.start_circuit_breaker("db", echo)
        assert list(sup) == ["db"]
        assert sup["db"] is first
        assert await first.call(1) == 1
        await check_still_works(sup)


@pytest.mark.parametrize("name", [1, None, b"db"])
async def test_a_name_that_is_not_a_str_is_refused(name):
    async with breaky.open_supervisor() as sup:
        with pytest.raises(TypeError, match=names("name", name)):
            await sup.start_circuit_breaker(name, echo)
        assert name not in sup
        assert len(sup) == 0
        await check_still_works(sup)


async def test_a_closed_supervisor_starts_nothing():
    async with breaky.open_supervisor() as sup:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await sup.start_circuit_breaker("x", echo)
    assert "x" not in sup
    assert len(sup) == 0


TWICE = "was already answered; a request takes one answer"


def reply(request):
    request.reply("first")


def fail(request):
    request.fail(KeyError("first"))


async def test_a_coroutine_instead_of_its_function_gets_trios_hint(recwarn):
    async with breaky.open_supervisor() as sup:
        with pytest.raises(
            TypeError,
            match=r"got a coroutine object of echo: pass echo, not echo\(\); its "
            r"arguments follow it, as in start_circuit_breaker\(name, echo, arg1",
        ):
            await sup.start_circuit_breaker("x", echo(None))
        assert "x" not in sup
    # It was closed: no "coroutine ... was never awaited" warning follows.
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


@pytest.mark.parametrize("second", [reply, fail])
@pytest.mark.parametrize("first", [reply, fail])
async def test_answering_a_request_twice_is_refused_in_the_resource(first, second):
    errors = []

    async def answers_twice(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async for request in inbox:
            first(request)
            try:
                second(request)
            except Exception as exc:
                errors.append(exc)

    async with breaky.open_supervisor() as sup:
        b = await sup.start_circuit_breaker("x", answers_twice)
        if first is reply:
            assert await b.call("hi") == "first"
        else:
            with pytest.raises(KeyError, match="first"):
                await b.call("hi")
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    # It was a call, answered already: the repr still says so.
    assert str(errors[0]) == f"<breaky.Request call 'hi' settled> {TWICE}"


async def test_a_cast_answered_twice_says_cast():
    errors = []
    done = trio.Event()

    async def answers_twice(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async for request in inbox:
            request.reply(None)
            try:
                request.reply(None)
            except RuntimeError as exc:
                errors.append(str(exc))
            done.set()

    async with breaky.open_supervisor() as sup:
        b = await sup.start_circuit_breaker("x", answers_twice)
        assert await b.cast("hi") is None
        await done.wait()
    assert errors == [f"<breaky.Request cast 'hi' settled> {TWICE}"]


async def test_a_withdrawn_call_answered_twice_says_call():
    errors = []
    taken = trio.Event()
    go_on = trio.Event()

    async def slow(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async for request in inbox:
            taken.set()
            await go_on.wait()
            request.reply(1)  # its caller left: dropped
            try:
                request.reply(2)
            except RuntimeError as exc:
                errors.append(str(exc))

    async with breaky.open_supervisor() as sup:
        b = await sup.start_circuit_breaker("x", slow)
        with trio.move_on_after(1):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.call, "hi")
                await taken.wait()
                nursery.cancel_scope.cancel()
        go_on.set()
    assert errors == [f"<breaky.Request call 'hi' settled> {TWICE}"]


@pytest.mark.parametrize("bad", ["not an exception", KeyError, KeyboardInterrupt()])
async def test_fail_needs_an_exception_instance(bad):
    errors = []

    async def fails_badly(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async for request in inbox:
            try:
                request.fail(bad)
            except Exception as exc:
                errors.append(exc)
            request.reply("still answerable")

    async with breaky.open_supervisor() as sup:
        b = await sup.start_circuit_breaker("x", fails_badly)
        assert await b.call("hi") == "still answerable"
    assert len(errors) == 1
    assert isinstance(errors[0], TypeError)
    assert re.search(names("Exception instance", bad), str(errors[0]))


# Everything else the API can be handed, in one table. Each entry makes the
# bad call on a supervisor ``sup`` holding a running breaker ``db``; after it,
# nothing new is registered and ``db`` still answers.


async def _start(sup, **options):
    await sup.start_circuit_breaker("new", echo, **options)


BAD_CALLS = [
    (
        "policy of the wrong type",
        lambda sup, db: _start(sup, policy={"failure_threshold": 3}),
        TypeError,
        r"policy must be a breaky\.Policy or None, got \{",
    ),
    (
        "an option overriding a policy badly",
        lambda sup, db: _start(sup, policy=breaky.Policy(), retry_timeout=-1),
        ValueError,
        names("retry_timeout", -1),
    ),
    (
        "a policy option out of range",
        lambda sup, db: _start(sup, policy=breaky.Policy(retry_backoff=0.5)),
        ValueError,
        names("retry_backoff", 0.5),
    ),
    (
        "max_queued of -1",
        lambda sup, db: _start(sup, policy=breaky.Policy(max_queued=-1)),
        ValueError,
        names("max_queued", -1),
    ),
    (
        "max_queued of 0",
        lambda sup, db: _start(sup, policy=breaky.Policy(max_queued=0)),
        ValueError,
        names("max_queued", 0),
    ),
    (
        "max_queued of a float",
        lambda sup, db: _start(sup, policy=breaky.Policy(max_queued=10.0)),
        TypeError,
        names("max_queued", 10.0),
    ),
    (
        "start_timeout of 0",
        lambda sup, db: _start(sup, policy=breaky.Policy(start_timeout=0)),
        ValueError,
        names("start_timeout", 0),
    ),
    (
        "start_timeout of NaN",
        lambda sup, db: _start(sup, policy=breaky.Policy(start_timeout=NAN)),
        ValueError,
        names("start_timeout", NAN),
    ),
    (
        "a subscriber's buffer of 0",
        lambda sup, db: _async(db.subscribe, max_buffer=0),
        ValueError,
        names("max_buffer", 0),
    ),
    (
        "a supervisor subscriber's buffer of a float",
        lambda sup, db: _async(sup.subscribe, max_buffer=1.5),
        TypeError,
        names("max_buffer", 1.5),
    ),
    (
        "an unknown breaker",
        lambda sup, db: sup.stop_circuit_breaker("nope"),
        KeyError,
        r"no breaker or guard named 'nope'; known: \['db'\]",
    ),
    (
        "a call's timeout as a string",
        lambda sup, db: db.call("x", timeout="5"),
        TypeError,
        names("timeout", "5"),
    ),
    (
        "a resource function that is not callable",
        lambda sup, db: sup.start_circuit_breaker("new", 42),
        TypeError,
        r"fn must be an async function",
    ),
]


async def _async(fn, *args, **kwargs):
    return fn(*args, **kwargs)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [entry[1:] for entry in BAD_CALLS],
    ids=[entry[0] for entry in BAD_CALLS],
)
async def test_every_other_bad_input_is_refused_cleanly(bad, error, match):
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", echo)
        with pytest.raises(error, match=match):
            await bad(sup, db)
        assert list(sup) == ["db"]
        assert await db.call("still") == "still"


async def test_use_after_stop_answers_off_and_outside_trio_is_an_error():
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", echo)
    # A stopped breaker is not an error to call: it answers OFF, as the seed.
    assert await db.call("late") is breaky.OFF
    assert await db.cast("late") is breaky.OFF
    db.failure()
    db.force_off()
    db.reset()
    assert db.state is breaky.State.STOPPED
    with pytest.raises(RuntimeError, match="closed"):
        await sup.start_circuit_breaker("db", echo)
    with pytest.raises(trio.EndOfChannel):
        await sup.subscribe().receive()


def test_a_breaker_used_outside_trio_says_so():
    async def main():
        async with breaky.open_supervisor() as sup:
            return await sup.start_circuit_breaker("db", echo)

    db = trio.run(main)
    # Its synchronous methods work outside a run (issue 21, point 5): it is
    # stopped, so a failure changes nothing, and its statistics say so.
    db.failure()
    assert db.statistics().state is breaky.State.STOPPED


async def _handler(request):
    request.reply(request.message)


def _sync_handler(request):
    request.reply(request.message)


BAD_SERVES = [
    ({"handler": _handler, "concurrency": 0}, ValueError, names("concurrency", 0)),
    ({"handler": _handler, "concurrency": -2}, ValueError, names("concurrency", -2)),
    ({"handler": _handler, "concurrency": "8"}, TypeError, names("concurrency", "8")),
    ({"handler": _handler, "concurrency": True}, TypeError, names("concurrency", True)),
    ({"handler": _sync_handler}, TypeError, r"handler must be an async function"),
    ({"handler": None}, TypeError, r"handler must be an async function.*None"),
]


@pytest.mark.parametrize(("arguments", "error", "match"), BAD_SERVES)
async def test_bad_serve_arguments_fail_the_start_before_serving(
    autojump_clock, arguments, error, match
):
    raised = []

    async def resource(inbox, *, task_status=trio.TASK_STATUS_IGNORED):
        try:
            await inbox.serve(**arguments)
        except Exception as exc:
            raised.append(exc)
            raise

    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", resource, failure_threshold=1)
        assert db.state is breaky.State.OFF
    assert len(raised) == 1
    assert isinstance(raised[0], error)
    assert re.search(match, str(raised[0]))
