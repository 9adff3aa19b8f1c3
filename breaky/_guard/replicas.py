"""Any healthy replica: a keyed guard's call to whichever of some keys can serve.

``await group.run_any(keys, fn, *args)`` calls ``fn(key, *args)`` through the
guard of one key among ``keys``: one that would not answer OFF (ON, or OFF
with its trial due), the one with the fewest calls in flight, ties taken in
turn. Its re-attempts and hedges go to an ON key not yet tried in this call
while one is left (else to the least busy ON key), and the group's budget
bounds them all. The call is answered OFF only when every key would answer
OFF: then the first key's guard answers it, and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast, final

from breaky._core.states import State

from .attempt_call import Call, Rules
from .guard import way_through
from .hedging import hedged
from .through import Runs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from breaky._core.core import Core
    from breaky._core.policy import Policy

    from .guard import Guard
    from .through import Timeout, Way

_ON = State.ON


def check_keys(keys: object) -> list[str]:
    """``keys`` as a list of distinct ``str`` keys, in order; or raise."""
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        msg = f"keys must be an iterable of str keys (not one str), got {keys!r}"
        raise TypeError(msg)
    given = cast("Iterable[object]", keys)
    checked: dict[str, None] = {}
    for key in given:
        if not isinstance(key, str):
            msg = f"keys must hold str keys (a host, a replica's name), got {key!r}"
            raise TypeError(msg)
        checked[key] = None
    if not checked:
        msg = "keys must name at least one key, got none"
        raise ValueError(msg)
    return list(checked)


@final
class Shared:
    """What a keyed guard's keys share for their attempts: rules and turn.

    The rules hold the group's one budget; the turn breaks ties between
    equally busy replicas.
    """

    __slots__ = ("rules", "turn")

    def __init__(self, policy: Policy) -> None:
        self.rules = Rules(policy)
        self.turn = 0

    async def run_any(
        self,
        guards: Sequence[tuple[str, Guard]],
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        timeout: Timeout,
    ) -> object:
        """``fn(key, *args)`` through the guard of one of ``guards``' keys."""
        route = Replicas(self, [way_through(g, (key, *args)) for key, g in guards])
        way = route.first()
        rules = self.rules
        call = Call(rules, route, way, fn, None, timeout)
        if way.core.state is _ON:
            rules.budget.firsts += 1  # a call made while ON: the deposit
            if rules.hedge_after is not None:
                return await hedged(call, False)  # noqa: FBT003 - OFF, not raised
        runs = Runs(fn)
        try:
            return await way.through(runs, way.args, None, timeout, False)  # noqa: FBT003
        except Exception as exc:
            if not runs.ran:
                raise  # a wrong call, or a bad timeout: no attempt ran
            error = exc
        return await call.again(error, 1)


def serves(core: Core) -> bool:
    """Whether a call through ``core``'s guard would run now (not OFF)."""
    return core.would_run()


def in_flight(core: Core) -> int:
    """Calls through ``core``'s guard not answered yet."""
    return core.in_flight()


@final
class Replicas:
    """The route of one ``run_any`` call: which key each attempt goes to."""

    __slots__ = ("_shared", "_tried", "_ways")

    def __init__(self, shared: Shared, ways: list[Way]) -> None:
        self._shared = shared
        self._ways = ways
        self._tried: set[int] = set()

    def first(self) -> Way:
        """The first attempt's key: the least busy that would not answer OFF.

        When every key would answer OFF, the first: its guard answers.
        """
        able = [i for i, way in enumerate(self._ways) if serves(way.core)]
        return self._take(self._least_busy(able) if able else 0)

    def on(self) -> bool:
        """Whether any key is ON (an extra attempt needs one)."""
        return any(way.core.state is _ON for way in self._ways)

    def next(self) -> Way | None:
        """An extra attempt's key: ON, not tried yet if one is left."""
        on = [i for i, way in enumerate(self._ways) if way.core.state is _ON]
        if not on:
            return None
        fresh = [i for i in on if i not in self._tried]
        return self._take(self._least_busy(fresh or on))

    def _least_busy(self, indexes: list[int]) -> int:
        """The index with the fewest calls in flight; ties in turn."""
        busy = [in_flight(self._ways[i].core) for i in indexes]
        fewest = min(busy)
        tied = [i for i, n in zip(indexes, busy, strict=True) if n == fewest]
        shared = self._shared
        shared.turn += 1
        return tied[shared.turn % len(tied)]

    def _take(self, index: int) -> Way:
        self._tried.add(index)
        return self._ways[index]
