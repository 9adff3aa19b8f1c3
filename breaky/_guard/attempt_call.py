"""The pieces of a call of several attempts: the rules, and one call's attempts.

:class:`Rules` are a policy's attempt rules and the budget they spend (one
per guard; a keyed group's keys share one). :class:`Call` is one call's
attempts after its first: where they go (a :class:`~.through.Route`), what
they run, and :meth:`Call.again`, which re-attempts one at a time.
Re-attempts (:mod:`.attempts`), hedges (:mod:`.hedging`) and replicas
(:mod:`.replicas`) are built on them.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, cast, final

import trio

from breaky._core.admission import failure_rule
from breaky._core.budget import Budget
from breaky._core.errors import BreakerOff, CallTimeout
from breaky._core.policy import Kind

from .through import Runs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from breaky._core.core import Core
    from breaky._core.policy import Policy

    from .through import Route, Timeout, Way


def _matcher(kinds: object) -> Callable[[Exception], bool]:
    """``attempt_on`` as a predicate (it was checked by the policy)."""
    if isinstance(kinds, tuple | type):
        matched = cast("tuple[type[Exception], ...] | type[Exception]", kinds)
        return lambda error: isinstance(error, matched)
    predicate = cast("Callable[[Exception], object]", kinds)
    return lambda error: bool(predicate(error))


@final
class Rules:
    """A policy's attempt rules, and the budget they spend.

    One per guard; a keyed group's keys share one, so that its budget bounds
    them together.
    """

    _on: Callable[[Exception], bool]
    __slots__ = (
        "_first_wait",
        "_max_wait",
        "_on",
        "_rng",
        "budget",
        "hedge_after",
        "most",
    )

    def __init__(self, policy: Policy) -> None:
        self.most = policy.attempts
        self.hedge_after = policy.hedge_after
        self.budget = Budget(policy.attempt_budget, policy.attempt_budget_min)
        self._first_wait = policy.attempt_wait
        self._max_wait = policy.max_attempt_wait
        self._rng = policy.rng or random.Random()  # noqa: S311 - not crypto
        if policy.attempt_on is None:
            counts = failure_rule(policy, Kind.GUARD)
            self._on = lambda error: isinstance(error, CallTimeout) or counts(error)
        else:
            self._on = _matcher(policy.attempt_on)

    def worth(self, error: Exception, core: Core) -> bool:
        """Whether ``error`` is worth another attempt (``attempt_on``).

        A predicate that raises says no: the call answers with ``error``, and
        the predicate's own exception is logged.
        """
        try:
            return self._on(error)
        except Exception as exc:  # noqa: BLE001 - logged, never lost
            core.log.callback_failed(
                "attempt_on", exc, error, "no other attempt is made"
            )
            return False

    def wait(self, started: int) -> float:
        """Seconds before the next attempt, ``started`` having been made."""
        ceiling = min(self._first_wait * 2.0 ** (started - 1), self._max_wait)
        return ceiling * (0.5 + 0.5 * self._rng.random())


@final
class Call:
    """One call's attempts: where they go, what they run, what is left."""

    __slots__ = ("fn", "kwargs", "last", "route", "rules", "timeout")

    def __init__(  # noqa: PLR0913, PLR0917 - one call's parts
        self,
        rules: Rules,
        route: Route,
        first: Way,
        fn: Callable[..., Awaitable[Any]],
        kwargs: dict[str, Any] | None,
        timeout: Timeout,
    ) -> None:
        self.rules = rules
        self.route = route
        self.last = first  # the way of the latest attempt: it counts denials
        self.fn = fn
        self.kwargs = kwargs
        self.timeout = timeout

    def deny(self) -> None:
        """An extra attempt was wanted but not allowed."""
        self.last.core.attempt_denied()

    def wanted(self, error: Exception, started: int) -> bool:
        """Whether another attempt is wanted after one failed with ``error``."""
        rules = self.rules
        return started < rules.most and rules.worth(error, self.last.core)

    def may_wait(self, started: int) -> float | None:
        """The wait before a wanted attempt, or ``None`` if it is denied.

        Denied when no guard is ON, when the wait would end after the
        caller's deadline, or when the budget is spent (counted). The budget
        is spent when the wait begins, so that a call it denies answers at
        once.
        """
        rules = self.rules
        wait = rules.wait(started)
        now = trio.current_time()
        if (
            not self.route.on()
            or now + wait > trio.current_effective_deadline()
            or not rules.budget.withdraw(now)
        ):
            self.deny()
            return None
        return wait

    async def again(self, error: Exception, started: int) -> object:
        """After ``started`` attempts, the last failed with ``error``: go on.

        Returns the first success; raises the exception of the last attempt
        that ran once no other attempt is wanted or allowed.
        """
        while True:
            wait = self.may_wait(started) if self.wanted(error, started) else None
            if wait is None:
                raise error
            await trio.sleep(wait)
            way = self.route.next()
            if way is None:
                self.deny()  # turned OFF while it waited
                raise error
            way.core.extra_attempt(hedge=False)
            started += 1
            runs = Runs(self.fn)
            refused = False
            try:
                return await self.attempt(way, runs)
            except Exception as exc:
                if runs.ran:
                    error = exc
                elif isinstance(exc, BreakerOff):
                    refused = True
                else:
                    raise  # a wrong call: no attempt ran
            if refused:
                raise error  # shed, or OFF while in line: as before it

    def attempt(self, way: Way, runs: Runs) -> Awaitable[Any]:
        """One attempt through ``way``'s guard, raising for OFF."""
        self.last = way
        return way.through(runs, way.args, self.kwargs, self.timeout, True)  # noqa: FBT003
