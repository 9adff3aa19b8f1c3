"""Re-attempts: one call of a guard made of several attempts, one after another.

An *attempt* is one run of the function through a guard's own call path (it
is admitted, counted, judged, holds a bulkhead place and has its own
timeout); a *call* is what the caller awaits. This module holds a policy's
attempt rules (:class:`Rules`: which exceptions are worth another attempt,
the waits, the budget), a guard's calls when it makes more than one attempt
(:class:`Attempts`), and one call's attempts after its first (:class:`Call`,
whose :meth:`Call.again` re-attempts one at a time). Hedged calls
(:mod:`.hedging`) and any healthy replica (:mod:`.replicas`) use the same
pieces; a :class:`Route` says which guard each attempt goes through.

No extra attempt starts while its guard is not ON, with a wait that would end
after the caller's deadline, or beyond the budget: each such refusal counts
one ``attempts_denied``, and the call answers as its last attempt ended.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, final

from breaky._core.policy import FROM_POLICY
from breaky._core.states import State

from .attempt_call import Call, Rules
from .hedging import hedged
from .through import Runs, Single, Way

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from breaky._core.core import Core

    from .through import Through, Timeout

logger = logging.getLogger("breaky")
_ON = State.ON


@final
class Attempts:
    """A guard's calls when its policy makes more than one attempt.

    (A lean guard, one whose calls need no clock and no scope, makes a first
    attempt on its own lean path, and hands a failed one to :meth:`after`.)
    """

    __slots__ = ("core", "rules")

    def __init__(self, core: Core, rules: Rules) -> None:
        self.core = core
        self.rules = rules

    @property
    def lean(self) -> bool:
        """A first attempt may take a lean guard's lean path (no hedges)."""
        return self.rules.hedge_after is None

    def deposit(self) -> None:
        """A call's first attempt is made while ON: the budget's deposit."""
        self.rules.budget.firsts += 1

    async def call(  # noqa: PLR0913, PLR0917 - the guard's path's, and the path
        self,
        through: Through,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        kwargs: dict[str, Any] | None,
        timeout: Timeout,
        raise_off: bool,  # noqa: FBT001 - as the guard's path
    ) -> object:
        """One call: its first attempt, and the others the policy allows.

        ``through`` is the guard's path for one attempt (passed, not kept:
        the guard holds this object, and no cycle holds the guard).
        """
        core = self.core
        rules = self.rules
        if core.state is _ON:
            rules.budget.firsts += 1  # a call made while ON: the budget's deposit
            if rules.hedge_after is not None:
                call = self._call_of(through, fn, args, kwargs, timeout)
                return await hedged(call, raise_off)
        # The guard's own path for the first attempt (a trial, if not ON).
        runs = Runs(fn)
        try:
            return await through(runs, args, kwargs, timeout, raise_off)
        except Exception as exc:
            if not runs.ran:
                raise  # refused (BreakerOff), or a wrong call: no attempt ran
            error = exc
        return await self._call_of(through, fn, args, kwargs, timeout).again(error, 1)

    async def after(
        self,
        through: Through,
        error: Exception,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
    ) -> object:
        """A lean guard's first attempt failed with ``error``: the rest of the call."""
        return await self._call_of(through, fn, args, None, FROM_POLICY).again(error, 1)

    def _call_of(
        self,
        through: Through,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        kwargs: dict[str, Any] | None,
        timeout: Timeout,
    ) -> Call:
        way = Way(self.core, through, args)
        return Call(self.rules, Single(way), way, fn, kwargs, timeout)
