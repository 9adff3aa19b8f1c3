"""The implementation of :mod:`breaky.prometheus` (see its docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from breaky._core.states import State

from .metrics import (
    CALLS_HELP,
    COUNTERS,
    FAILURES_HELP,
    GROUP_CALLS_HELP,
    GROUP_FAILURES_HELP,
    GROUP_FORGOTTEN_HELP,
    GROUP_KEYS_HELP,
    GROUP_LIMIT_HELP,
    GROUP_PENDING_HELP,
    GROUP_REFUSED_HELP,
    LIMIT_HELP,
    OUTCOMES,
    PENDING_HELP,
    STATE_HELP,
    Reading,
    StatisticsReader,
    state_label,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client.metrics_core import Metric

    from breaky._core.statistics import BreakerStatistics, KeyedStatistics
    from breaky._groups.supervisor import Supervisor

__all__ = ["BreakyCollector"]


@final
@attrs.define(eq=False)
class BreakyCollector:
    """A ``prometheus_client`` collector of every breaker of ``supervisor``.

    Register it with a registry: ``registry.register(BreakyCollector(sup))``.
    Make it inside ``trio.run`` (where the supervisor is); a scrape may then
    come from any thread. A scrape from another thread (as from
    ``prometheus_client``'s HTTP server) reads the breakers in the Trio
    thread through :func:`trio.from_thread.run_sync`, so it waits for Trio to
    run; once ``trio.run`` has returned, a scrape shows no breakers.

    Every metric has a ``breaker`` label, the breaker's name:

    - ``breaky_state`` (gauge, with a ``state`` label: ``starting``, ``on``,
      ``off``, ``forced_off``, ``stopped``): 1 for the current state, 0 for
      the others.
    - ``breaky_failures`` (gauge): failures counted toward the threshold now.
    - ``breaky_pending`` (gauge): calls not answered yet.
    - ``breaky_concurrency_limit`` (gauge): calls that may run at once now
      (``max_concurrent``, learned if :class:`~breaky.Adaptive`; a
      resource's ``serve()`` concurrency); only for breakers with a limit.
    - ``breaky_calls_total`` (counter, with an ``outcome`` label: ``reply``,
      ``error``, ``off``, ``shed``, ``timeout``, ``lost``, ``cancelled``):
      calls answered; the calls made are their sum plus ``breaky_pending``.
    - ``breaky_casts_total``, ``breaky_crashes_total``,
      ``breaky_failed_starts_total``, ``breaky_restarts_total``,
      ``breaky_retries_total``, ``breaky_trips_total``,
      ``breaky_slow_calls_total``, ``breaky_fleet_holds_total``,
      ``breaky_reattempts_total``, ``breaky_hedges_total``,
      ``breaky_attempts_denied_total`` (counters): the
      :class:`~breaky.BreakerStatistics` fields of the same names.

    A keyed group (:meth:`~breaky.Supervisor.keyed_guard`,
    :meth:`~breaky.Supervisor.keyed_breaker`) has the series above only for
    its keys that are not ON, each as a breaker named ``group[key]``, and
    these, with a ``group`` label, for all its keys at once:

    - ``breaky_group_keys`` (gauge, with a ``state`` label): how many live
      keys are in each state.
    - ``breaky_group_failures``, ``breaky_group_pending``,
      ``breaky_group_concurrency_limit`` (gauges): summed over the live keys
      (the last only for a group whose keys have a limit).
    - ``breaky_group_calls_total`` (with an ``outcome`` label) and
      ``breaky_group_casts_total`` ... ``breaky_group_slow_calls_total``
      (counters): as above, totals over every key the group had, forgotten
      ones included.
    - ``breaky_group_forgotten_total``, ``breaky_group_refused_total``
      (counters): keys forgotten; new keys refused at ``max_keys``.

    Raises:
        TypeError: ``supervisor`` is not a :class:`breaky.Supervisor`.
        RuntimeError: made outside ``trio.run``.

    """

    supervisor: Supervisor
    _reader: StatisticsReader = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._reader = StatisticsReader.of(self.supervisor, who="BreakyCollector()")

    def describe(self) -> Iterator[Metric]:
        """The metrics without samples: registering reads nothing."""
        return _families(Reading([], []))

    def collect(self) -> Iterator[Metric]:
        """The metrics, read from the breakers now."""
        return _families(self._reader.read())


def _families(reading: Reading) -> Iterator[Metric]:
    yield from _breaker_families(reading.breakers)
    if reading.groups:  # no keyed group, no group series at all
        yield from _group_families(reading.groups)


def _breaker_families(
    breakers: Sequence[tuple[str, BreakerStatistics]],
) -> Iterator[Metric]:
    state = GaugeMetricFamily("breaky_state", STATE_HELP, labels=["breaker", "state"])
    failures = GaugeMetricFamily("breaky_failures", FAILURES_HELP, labels=["breaker"])
    pending = GaugeMetricFamily("breaky_pending", PENDING_HELP, labels=["breaker"])
    limit = GaugeMetricFamily(
        "breaky_concurrency_limit", LIMIT_HELP, labels=["breaker"]
    )
    calls = CounterMetricFamily(
        "breaky_calls_total", CALLS_HELP, labels=["breaker", "outcome"]
    )
    counters = [
        (CounterMetricFamily(f"breaky_{name}_total", text, labels=["breaker"]), field)
        for name, field, _, text in COUNTERS
    ]
    for name, stats in breakers:
        for member in State:
            value = 1.0 if stats.state is member else 0.0
            state.add_metric([name, state_label(member)], value)
        failures.add_metric([name], stats.failures)
        pending.add_metric([name], stats.pending)
        if stats.concurrency_limit is not None:
            limit.add_metric([name], stats.concurrency_limit)
        for outcome, field in OUTCOMES:
            calls.add_metric([name, outcome], getattr(stats, field))
        for family, field in counters:
            family.add_metric([name], getattr(stats, field))
    yield state
    yield failures
    yield pending
    yield limit
    yield calls
    for family, _ in counters:
        yield family


def _group_families(groups: Sequence[tuple[str, KeyedStatistics]]) -> Iterator[Metric]:
    keys = GaugeMetricFamily(
        "breaky_group_keys", GROUP_KEYS_HELP, labels=["group", "state"]
    )
    failures = GaugeMetricFamily(
        "breaky_group_failures", GROUP_FAILURES_HELP, labels=["group"]
    )
    pending = GaugeMetricFamily(
        "breaky_group_pending", GROUP_PENDING_HELP, labels=["group"]
    )
    limit = GaugeMetricFamily(
        "breaky_group_concurrency_limit", GROUP_LIMIT_HELP, labels=["group"]
    )
    calls = CounterMetricFamily(
        "breaky_group_calls_total", GROUP_CALLS_HELP, labels=["group", "outcome"]
    )
    counters = [
        (
            CounterMetricFamily(f"breaky_group_{name}_total", text, labels=["group"]),
            field,
        )
        for name, field, _, text in COUNTERS
    ]
    forgotten = CounterMetricFamily(
        "breaky_group_forgotten_total", GROUP_FORGOTTEN_HELP, labels=["group"]
    )
    refused = CounterMetricFamily(
        "breaky_group_refused_total", GROUP_REFUSED_HELP, labels=["group"]
    )
    for name, stats in groups:
        for member in State:
            keys.add_metric([name, state_label(member)], stats.states[member])
        failures.add_metric([name], stats.failures)
        pending.add_metric([name], stats.pending)
        if stats.concurrency_limit is not None:
            limit.add_metric([name], stats.concurrency_limit)
        for outcome, field in OUTCOMES:
            calls.add_metric([name, outcome], getattr(stats, field))
        for family, field in counters:
            family.add_metric([name], getattr(stats, field))
        forgotten.add_metric([name], stats.forgotten)
        refused.add_metric([name], stats.refused)
    yield keys
    yield failures
    yield pending
    yield limit
    yield calls
    for family, _ in counters:
        yield family
    yield forgotten
    yield refused
