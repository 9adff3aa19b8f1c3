"""What the metrics exporters share: the numbers, and a safe way to read them.

Neither prometheus_client nor OpenTelemetry is imported here: this module
belongs to the core, which needs only trio and attrs.

Exporters read when they are asked to (a scrape, a collection), usually on a
thread of their own. The breakers live in the Trio thread, and
:meth:`~breaky.CircuitBreaker.statistics` reads Trio's clock, so every read
is done in the Trio thread: directly when already there, otherwise through
:func:`trio.from_thread.run_sync`. Nothing is added to the call path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs
import trio

from breaky._core.statistics import COUNTERS as COUNTS
from breaky._core.statistics import KeyedStatistics
from breaky._groups.registry import key_name
from breaky._groups.supervisor import Supervisor

if TYPE_CHECKING:
    from breaky._core.states import State
    from breaky._core.statistics import BreakerStatistics

# How each finished call was answered: (label value, BreakerStatistics field).
# Calls not answered yet are the pending gauge, so the outcomes and pending
# add up to the calls made. Both tables come from the counters' one
# declaration (breaky._core.statistics.Counts).
OUTCOMES: tuple[tuple[str, str], ...] = tuple(
    (outcome, name) for name, _, _, outcome in COUNTS if outcome is not None
)

# The other totals: (name, BreakerStatistics field, unit, what it counts);
# ``calls`` is the sum of the outcomes and pending, so it is not repeated.
COUNTERS: tuple[tuple[str, str, str, str], ...] = tuple(
    (name, name, unit, text)
    for name, text, unit, outcome in COUNTS
    if outcome is None and name != "calls"
)

STATE_HELP = "The breaker's state: 1 for its current state, 0 for the others."
FAILURES_HELP = "Failures that count toward the breaker's failure rule now."
PENDING_HELP = "Calls not answered yet (queued, or held by the resource)."
CALLS_HELP = "Calls answered, by outcome; the calls made are these plus pending."
LIMIT_HELP = (
    "Calls that may run at once now (max_concurrent, learned if adaptive; "
    "a resource's serve() concurrency); absent with no limit."
)

# A keyed group's series: its keys aggregated (per-key series exist only for
# the keys that are not ON, as plain breakers named "group[key]").
GROUP_KEYS_HELP = "The keyed group's live keys in each state."
GROUP_FAILURES_HELP = "Failures counted now, summed over the group's live keys."
GROUP_PENDING_HELP = "Calls not answered yet, summed over the group's live keys."
GROUP_CALLS_HELP = (
    "Calls answered, by outcome, over every key the group had (forgotten ones "
    "too); the calls made are these plus pending."
)
GROUP_LIMIT_HELP = (
    "Calls that may run at once now, summed over the live keys that have a limit."
)
GROUP_FORGOTTEN_HELP = "Keys forgotten: idle, or evicted at the max_keys bound."
GROUP_REFUSED_HELP = (
    "New keys refused at the max_keys bound, none being evictable (answered OFF)."
)


@final
@attrs.frozen
class Reading:
    """One read of a supervisor: breakers (a group's keys not ON among them)."""

    breakers: list[tuple[str, BreakerStatistics]]
    groups: list[tuple[str, KeyedStatistics]]


def state_label(state: State) -> str:
    """``State.FORCED_OFF`` -> ``"forced_off"``: a label value without spaces."""
    return state.name.lower()


@final
@attrs.define(eq=False)
class StatisticsReader:
    """Reads a supervisor's breakers from any thread, in the Trio thread."""

    supervisor: Supervisor
    token: trio.lowlevel.TrioToken

    @classmethod
    def of(cls, supervisor: object, *, who: str) -> StatisticsReader:
        """Check ``supervisor`` and remember the Trio run it lives in."""
        if not isinstance(supervisor, Supervisor):
            msg = (
                f"{who}: supervisor must be a breaky.Supervisor "
                f"(from breaky.open_supervisor()), got {supervisor!r}"
            )
            raise TypeError(msg)
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            msg = (
                f"{who} must be called inside trio.run, in the thread where the "
                "supervisor runs"
            )
            raise RuntimeError(msg) from None
        return cls(supervisor, token)

    def read(self) -> Reading:
        """Every breaker's and group's statistics; nothing once Trio ended."""
        try:
            here = trio.lowlevel.current_trio_token()
        except RuntimeError:
            # Another thread: the HTTP server's, or a metric reader's.
            try:
                return trio.from_thread.run_sync(self._take, trio_token=self.token)
            except trio.RunFinishedError:
                return Reading([], [])  # the run is over, and every breaker
        if here is not self.token:
            msg = (
                "breaky's metrics were read from another Trio run than the "
                "supervisor's; read them from its own run or from a plain thread"
            )
            raise RuntimeError(msg)
        return self._take()

    def _take(self) -> Reading:
        supervisor = self.supervisor
        reading = Reading([], [])
        for name in supervisor:
            stats = supervisor[name].statistics()
            if isinstance(stats, KeyedStatistics):
                reading.groups.append((name, stats))
                reading.breakers.extend(
                    (key_name(name, key), each) for key, each in stats.not_on.items()
                )
            else:
                reading.breakers.append((name, stats))
        return reading
