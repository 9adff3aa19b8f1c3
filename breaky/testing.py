"""Helpers for testing your own resources: fault injection, waiting for a state.

Wrap a resource function with :class:`Faults` and start the wrapped function
under a breaker instead::

    faults = breaky.testing.Faults(crash=0.05, fail_start=0.2, seed=1)
    db = await sup.start_circuit_breaker("db", faults.wrap(database), "me")

Each start may fail or be slow, and each request the resource takes may make
it crash, hang, return, or answer late, at the rates given. The faults are
drawn from a seeded random generator, so a failing test can be replayed, and
:attr:`Faults.injected` counts what was injected. Time comes from Trio's
clock, so ``autojump_clock`` makes hours of outages take milliseconds.

:func:`wait_for_state` waits, without polling, until a breaker gets to a state.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import random
from typing import TYPE_CHECKING, Any, cast, final

import attrs
import trio

from ._core.checks import check_seconds
from ._core.states import State
from ._guard.guard import Guard
from ._resource.breaker import CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from ._core.internals import Internals
    from ._resource.inbox import Inbox
    from ._resource.request import Request

__all__ = ["Faults", "InjectedFault", "internals", "wait_for_state"]


@final
class InjectedFault(Exception):  # noqa: N818 - named for what it is
    """The exception a :class:`Faults` wrapper raises to simulate a failure."""


def _rate(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{attribute.name} must be a probability from 0 to 1, got {value!r}"
        raise TypeError(msg)
    if not 0 <= value <= 1:
        msg = f"{attribute.name} must be a probability from 0 to 1, got {value!r}"
        raise ValueError(msg)


def _delay(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value, allow_zero=True)


_PER_REQUEST = ("crash", "hang", "normal_return", "slow_reply")


@final
@attrs.define(eq=False)
class Faults:
    """Rates of injected faults, for resources wrapped with :meth:`wrap`.

    Each rate is a probability from 0 to 1. Per start attempt:
    ``fail_start`` (raise :class:`InjectedFault` before ``started()``) and
    ``slow_start`` (wait ``delay`` seconds first). Per request taken, at most
    one of: ``crash`` (raise :class:`InjectedFault`), ``hang`` (hold the
    request and block forever), ``normal_return`` (return while the inbox is
    open) and ``slow_reply`` (wait ``delay`` seconds, then serve it); their
    sum must not exceed 1.

    Attributes:
        injected: how many of each fault were injected, by name.

    """

    crash: float = attrs.field(default=0.0, validator=_rate, kw_only=True)
    hang: float = attrs.field(default=0.0, validator=_rate, kw_only=True)
    normal_return: float = attrs.field(default=0.0, validator=_rate, kw_only=True)
    slow_reply: float = attrs.field(default=0.0, validator=_rate, kw_only=True)
    fail_start: float = attrs.field(default=0.0, validator=_rate, kw_only=True)
    slow_start: float = attrs.field(default=0.0, validator=_rate, kw_only=True)
    delay: float = attrs.field(default=1.0, validator=_delay, kw_only=True)
    seed: int | None = attrs.field(default=None, kw_only=True)
    injected: collections.Counter[str] = attrs.field(
        init=False, factory=collections.Counter[str]
    )
    _random: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        total = sum(getattr(self, name) for name in _PER_REQUEST)
        if total > 1:
            msg = (
                "crash + hang + normal_return + slow_reply must not exceed 1, "
                f"got {total!r}"
            )
            raise ValueError(msg)
        self._random = random.Random(self.seed)  # noqa: S311 - not crypto

    def wrap(
        self, fn: Callable[..., Awaitable[object]]
    ) -> Callable[..., Awaitable[None]]:
        """Return a resource function that runs ``fn`` with these faults."""

        @functools.wraps(fn)
        async def faulty(
            inbox: Inbox[Any, Any],
            *args: object,
            task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            if self._draw("slow_start"):
                await trio.sleep(self.delay)
            if self._draw("fail_start"):
                msg = "injected: the start failed"
                raise InjectedFault(msg)
            async with contextlib.aclosing(self._requests(inbox)) as requests:
                await fn(requests, *args, task_status=task_status)

        return faulty

    async def _requests(
        self, inbox: Inbox[Any, Any]
    ) -> AsyncGenerator[Request[Any, Any], None]:
        async for request in inbox:
            fault = self._pick()
            if fault == "crash":
                msg = f"injected: crashed while holding {request!r}"
                raise InjectedFault(msg)
            if fault == "hang":
                await trio.sleep_forever()
            if fault == "normal_return":
                return
            if fault == "slow_reply":
                await trio.sleep(self.delay)
            yield request

    def _draw(self, name: str) -> bool:
        rate: float = getattr(self, name)
        hit = self._random.random() < rate
        if hit:
            self.injected[name] += 1
        return hit

    def _pick(self) -> str | None:
        roll = self._random.random()
        for name in _PER_REQUEST:
            rate: float = getattr(self, name)
            if roll < rate:
                self.injected[name] += 1
                return name
            roll -= rate
        return None


async def wait_for_state(
    breaker: CircuitBreaker[Any, Any] | Guard, state: State
) -> None:
    """Wait until ``breaker`` (a circuit breaker or a guard) is in ``state``.

    Returns (after a checkpoint) at once if it is in ``state`` now, otherwise
    as soon as it changes to ``state``: a state it passes through is not
    missed, even if it has left it again by the time this returns. It
    listens with :meth:`~breaky.CircuitBreaker.subscribe`, so it never polls,
    and time moves on Trio's clock only as far as the breaker takes it.

    Raises:
        TypeError: ``breaker`` is not a :class:`~breaky.CircuitBreaker` nor
            a :class:`~breaky.Guard`, or ``state`` not a :class:`~breaky.State`.
        RuntimeError: the breaker stopped before it got to ``state``.

    """
    if not isinstance(cast("object", breaker), CircuitBreaker | Guard):
        msg = f"breaker must be a breaky.CircuitBreaker or Guard, got {breaker!r}"
        raise TypeError(msg)
    if not isinstance(cast("object", state), State):
        msg = f"state must be a breaky.State, got {state!r}"
        raise TypeError(msg)
    # Subscribe before looking, so that no change falls between the two.
    async with breaker.subscribe() as changes:
        if breaker.state is state:
            await trio.lowlevel.checkpoint()
            return
        # A full buffer drops the oldest changes, never the latest, so the
        # change to the state the breaker is in now is always received.
        async for change in changes:
            if change.new is state:
                return
    msg = f"breaker {breaker.name!r} stopped before it was {state.name}"
    raise RuntimeError(msg)


def internals(breaker: object) -> Internals:
    """What no public view shows: breaky's own test seam.

    For tests of breaky itself (its model-based tests compare a breaker's
    retry deadline, fleet hold, trial and line with a model): ``breaker`` is
    a :class:`~breaky.Guard`, a :class:`~breaky.CircuitBreaker` or a keyed
    group. The snapshot's fields may change in any release.

    Raises:
        TypeError: ``breaker`` is none of those.

    """
    seam = getattr(breaker, "__breaky_internals__", None)
    if seam is None:
        msg = f"internals() takes a breaker, a guard or a keyed group, got {breaker!r}"
        raise TypeError(msg)
    return cast("Internals", seam())
