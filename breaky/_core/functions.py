"""What breaky calls on a user's behalf must be an async function: said at once.

A resource function, a guarded function, a handler: each is checked when it
is handed over, on the object itself, so that a sync function fails with a
message that says what to pass, not later with a failure of the dependency.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Callable

PARTIAL = (
    "; pass keyword arguments for the resource function with "
    "functools.partial(fn, name=value)"
)


def check_async_function(
    fn: object, *, what: str = "fn must be", shape: str = "(async def)"
) -> None:
    """Refuse ``fn`` unless it is (or may be) an async function.

    The message is ``f"{what} an async function {shape}, got {fn!r}"``.

    It is judged on itself first: an ``async def`` is accepted whatever it
    wraps (a run-in-thread adapter made with :func:`functools.wraps` around a
    blocking function). A sync function is accepted only as a wrapper of an
    async one (as :meth:`trio.Nursery.start` allows), and any other callable
    (a :func:`functools.partial`, an object with ``__call__``) on trust: what
    it returns is checked when it is called.
    """
    if inspect.iscoroutine(fn):
        # fn(...) instead of fn: say so, as trio does, and close it, so that
        # no "never awaited" warning follows the error.
        name = fn.__qualname__
        fn.close()
        msg = (
            f"{what} an async function, got a coroutine object: "
            f"pass {name}, not {name}()"
        )
        raise TypeError(msg)
    given: Any = fn  # judged at run time, whatever its static type
    if callable(given) and (
        inspect.iscoroutinefunction(given)
        or not inspect.isroutine(given)
        or inspect.iscoroutinefunction(inspect.unwrap(given))
    ):
        return
    msg = f"{what} an async function {shape}, got {fn!r}"
    raise TypeError(msg)


def not_awaitable(fn: object, result: object) -> TypeError:
    """The error of a guarded ``fn`` whose call returned no awaitable: a wrong call."""
    return TypeError(
        f"{fn!r} returned {type(result).__name__}, not an awaitable: pass an "
        "async function (async def); this one was called, unguarded. To guard "
        "a blocking function, run it in a thread: "
        "guard.run(trio.to_thread.run_sync, fn, *args)"
    )


def check_resource_function(fn: object, args: tuple[object, ...]) -> None:
    """Refuse, before anything starts, a function that cannot be a resource."""
    if inspect.iscoroutine(fn):
        # Its arguments follow it: say how to pass them.
        name = fn.__qualname__
        fn.close()
        msg = (
            f"fn must be an async function, got a coroutine object of {name}: "
            f"pass {name}, not {name}(); its arguments follow it, as in "
            f"start_circuit_breaker(name, {name}, arg1, arg2)"
        )
        raise TypeError(msg)
    check_async_function(fn)
    try:
        # An async def is judged on itself, not on what it wraps.
        signature = inspect.signature(
            cast("Callable[..., object]", fn),
            follow_wrapped=not inspect.iscoroutinefunction(fn),
        )
    except (TypeError, ValueError):  # pragma: no cover - some builtins hide it
        return
    try:
        signature.bind(None, *args, task_status=None)
    except TypeError as exc:
        if "task_status" in str(exc):
            msg = (
                f"{fn!r} must accept a task_status keyword argument, "
                "as a function started by nursery.start() does"
            )
        else:
            msg = f"{fn!r} cannot be called as fn(inbox, *args, task_status=...): {exc}"
            if any(
                p.kind is p.KEYWORD_ONLY
                and p.default is p.empty
                and p.name != "task_status"
                for p in signature.parameters.values()
            ):  # a keyword-only argument it needs, and *args cannot give
                msg += PARTIAL
        raise TypeError(msg) from None
