"""Hedged calls: another attempt every ``hedge_after`` seconds, first success wins.

A hedged call runs its attempts in a nursery of its own, in the caller's
task's scope: while no attempt has answered and fewer than ``attempts`` have
started, another starts every ``hedge_after`` seconds (an ON guard and the
budget allowing). The first success answers and cancels the others, which
count ``cancelled`` and nothing else (no failure, no timeout). A failure
worth another attempt while others run ends only its own attempt; one that
is not (``attempt_on``) ends the call at once. When every attempt started
has failed, the next waits as a re-attempt does; an attempt the guard
refuses (shed) with none other running ends the call as it stands.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

import trio

from breaky._core.errors import BreakerOff
from breaky._core.off import OFF

from .through import Runs

if TYPE_CHECKING:
    from .attempt_call import Call
    from .through import Way


async def hedged(call: Call, raise_off: bool) -> object:  # noqa: FBT001 - the guard's
    """The answer of ``call``, its attempts hedged (see the module)."""
    race = _Race(call)
    async with trio.open_nursery() as nursery:
        await race.run(nursery)
    if race.won:
        return race.result
    if race.error is not None:
        raise race.error
    # No attempt ran: the guard refused the first (and every hedge).
    if raise_off:
        assert race.refusal is not None  # noqa: S101 - refused, so one is kept
        raise race.refusal
    return OFF


@final
class _Race:
    """One hedged call's attempts, as they start and end."""

    __slots__ = (
        "_changed",
        "_next_at",
        "_nursery",
        "_reattempt",
        "_running",
        "_started",
        "call",
        "done",
        "error",
        "refusal",
        "result",
        "won",
    )

    def __init__(self, call: Call) -> None:
        self.call = call
        self._started = self._running = 0
        self._changed = trio.Event()
        self._next_at = math.inf  # when the next attempt starts
        self._reattempt = False  # whether it is a re-attempt (not a hedge)
        self._nursery: trio.Nursery | None = None
        self.done = self.won = False
        self.result: object = None
        # The exception of the last attempt that ran and failed: the call's
        # answer if no attempt succeeds.
        self.error: Exception | None = None
        self.refusal: BreakerOff | None = None  # the guard's, if one refused

    async def run(self, nursery: trio.Nursery) -> None:
        """Start the first attempt; start the others as time and failures say."""
        self._nursery = nursery
        self._start(self.call.last)
        while True:
            with trio.move_on_at(self._next_at):
                await self._changed.wait()
            if self.done:
                return
            if self._changed.is_set():
                self._changed = trio.Event()
                if not self._running and not self._reattempt:
                    self._all_failed()
            else:
                self._time_came()

    def _start(self, way: Way) -> None:
        self._started += 1
        self._running += 1
        assert self._nursery is not None  # noqa: S101 - set by run()
        self._nursery.start_soon(self._attempt, way)
        rules = self.call.rules
        hedge_after = rules.hedge_after
        assert hedge_after is not None  # noqa: S101 - a hedged call's policy
        more = self._started < rules.most
        self._next_at = trio.current_time() + hedge_after if more else math.inf
        self._reattempt = False

    def _all_failed(self) -> None:
        """Every attempt started has failed, each worth another attempt.

        (A failure not worth one, or a refusal with nothing left running,
        ended the call there and then.)
        """
        wait = None
        if self._started < self.call.rules.most:
            wait = self.call.may_wait(self._started)
        if wait is None:
            self._end()  # the attempts are used, or another is denied
            return
        self._next_at = trio.current_time() + wait
        self._reattempt = True

    def _time_came(self) -> None:
        """The next attempt is due: a re-attempt, or a hedge."""
        call = self.call
        way = call.route.next()
        if self._reattempt:
            if way is None:
                call.deny()  # turned OFF while it waited
                self._end()
                return
            way.core.extra_attempt(hedge=False)
            self._start(way)
            return
        if way is None or not call.rules.budget.withdraw(trio.current_time()):
            call.deny()
            self._next_at = math.inf  # no more hedges for this call
            return
        way.core.extra_attempt(hedge=True)
        self._start(way)

    async def _attempt(self, way: Way) -> None:
        """One attempt, in the race's nursery: it reports how it ended."""
        call = self.call
        runs = Runs(call.fn)
        try:
            result = await call.attempt(way, runs)
        except Exception as exc:  # noqa: BLE001 - the attempt's answer
            self._running -= 1
            if self.done:
                return
            if not runs.ran:
                if not isinstance(exc, BreakerOff):
                    self.error = exc  # a wrong call: no other attempt fixes it
                    self._end()
                    return
                self.refusal = exc
                if not self._running:
                    self._end()  # the last one running was refused: as it stands
                    return
            elif call.rules.worth(exc, way.core):
                self.error = exc
            else:
                self.error = exc
                self._end()
                return
            self._changed.set()
            return
        except BaseException:
            self._running -= 1  # cancelled: it counted itself, and nothing else
            raise
        self._running -= 1
        if not self.done:
            self.won, self.result = True, result
            self._end()

    def _end(self) -> None:
        """The call has its answer: cancel whatever still runs."""
        self.done = True
        # Woken first: a coordinator waiting for news returns, not cancelled.
        self._changed.set()
        assert self._nursery is not None  # noqa: S101 - set by run()
        self._nursery.cancel_scope.cancel()
