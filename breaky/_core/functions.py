"""What breaky calls on a user's behalf must be an async function: said at once.

A resource function, a guarded function, a handler: each is checked when it
is handed over, on the object itself, so that a sync function fails with a
message that says what to pass, not later with a failure of the dependency.
"""

from __future__ import annotations

import inspect

PARTIAL = (
    "; pass keyword arguments for the resource function with "
    "functools.partial(fn, name=value)"
)


def check_resource_function(fn: object, args: tuple[object, ...]) -> None:
    """Refuse, before anything starts, a function that cannot be a resource."""
    if inspect.iscoroutine(fn):
        # fn(...) instead of fn: say so, as trio does, and close it, so that
        # no "never awaited" warning follows the error.
        name = fn.__qualname__
        fn.close()
        msg = (
            f"fn must be an async function, got a coroutine object of {name}: "
            f"pass {name}, not {name}(); its arguments follow it, as in "
            f"start_circuit_breaker(name, {name}, arg1, arg2)"
        )
        raise TypeError(msg)
    # Like nursery.start, accept a sync wrapper (functools.wraps) of an async
    # function; refuse a plain sync function before it fails every start.
    if not callable(fn) or (
        inspect.isroutine(inspect.unwrap(fn))
        and not inspect.iscoroutinefunction(inspect.unwrap(fn))
    ):
        msg = f"fn must be an async function (async def), got {fn!r}"
        raise TypeError(msg)
    try:
        signature = inspect.signature(fn)
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
