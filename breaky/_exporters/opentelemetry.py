"""The implementation of :mod:`breaky.opentelemetry` (see its docstring)."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, cast, final

import attrs
from opentelemetry import metrics

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
    from collections.abc import Callable, Iterable, Iterator

    from breaky._core.statistics import BreakerStatistics, KeyedStatistics
    from breaky._groups.supervisor import Supervisor

    # An instrument's values for one breaker, with their other attributes.
    Points = Iterable[tuple[int, dict[str, str]]]

__all__ = ["Instrumentation", "instrument"]

_METER_NAME = "breaky"


@final
@attrs.define(eq=False)
class _Observed:
    """One meter's breaky instruments, and the supervisors they report on.

    A meter keeps the first instrument registered under a name and ignores
    the callbacks of later ones, so each meter gets one set of instruments,
    whose callbacks report every supervisor instrumented on it.
    """

    # Replaced, never changed in place: callbacks run on the reader's thread.
    readers: tuple[StatisticsReader, ...] = ()
    lock: threading.Lock = attrs.Factory(threading.Lock)
    # The last read of every supervisor, and the readers it was taken from.
    # A collection calls the instruments' callbacks in the order they were
    # made: the first (breaky.state) reads, the others reuse its read, so
    # that a keyed group of 10,000 keys is read once a collection, not once
    # an instrument.
    _last: tuple[tuple[StatisticsReader, ...], list[Reading]] | None = None

    def readings(self, *, fresh: bool) -> list[Reading]:
        last, readers = self._last, self.readers
        if fresh or last is None or last[0] is not readers:
            last = self._last = (readers, [reader.read() for reader in readers])
        return last[1]

    def read(self, *, fresh: bool = False) -> Iterator[tuple[str, BreakerStatistics]]:
        for reading in self.readings(fresh=fresh):
            yield from reading.breakers

    def read_groups(self) -> Iterator[tuple[str, KeyedStatistics]]:
        for reading in self.readings(fresh=False):
            yield from reading.groups


_observed: weakref.WeakKeyDictionary[metrics.Meter, _Observed] = (
    weakref.WeakKeyDictionary()
)
_observed_lock = threading.Lock()


@final
@attrs.define(eq=False)
class Instrumentation:
    """What :func:`instrument` returns; :meth:`uninstrument` undoes it."""

    _observed: _Observed
    _reader: StatisticsReader

    @property
    def instrumented(self) -> bool:
        """Whether the supervisor is still reported."""
        return self._reader in self._observed.readers

    def uninstrument(self) -> None:
        """Stop reporting the supervisor's breakers; calling it again is fine.

        OpenTelemetry's API cannot remove an instrument, so breaky's
        instruments stay on the meter and report nothing for this supervisor
        from the next collection on. Until then the meter keeps a reference
        to the supervisor: uninstrument one that closes while its meter
        provider lives on.
        """
        observed = self._observed
        with observed.lock:
            readers = observed.readers
            observed.readers = tuple(r for r in readers if r is not self._reader)


def instrument(
    supervisor: Supervisor, meter_provider: metrics.MeterProvider | None = None
) -> Instrumentation:
    """Report the breakers of ``supervisor`` through OpenTelemetry.

    Creates (once per meter) observable instruments on the meter ``"breaky"``
    of ``meter_provider`` (by default the global one). Every data point has a
    ``breaker`` attribute, the breaker's name:

    - ``breaky.state`` (gauge, ``{breaker}``, with a ``state`` attribute:
      ``starting``, ``on``, ``off``, ``forced_off``, ``stopped``): 1 for the
      current state, 0 for the others.
    - ``breaky.failures`` (up-down counter, ``{failure}``): failures counted
      toward the threshold now.
    - ``breaky.pending`` (up-down counter, ``{call}``): calls not answered yet.
    - ``breaky.concurrency_limit`` (gauge, ``{call}``): calls that may run at
      once now (``max_concurrent``, learned if :class:`~breaky.Adaptive`; a
      resource's ``serve()`` concurrency); only for breakers with a limit.
    - ``breaky.calls`` (counter, ``{call}``, with an ``outcome`` attribute:
      ``reply``, ``error``, ``off``, ``shed``, ``timeout``, ``lost``,
      ``cancelled``):
      calls answered; the calls made are their sum plus ``breaky.pending``.
    - ``breaky.casts``, ``breaky.crashes``, ``breaky.failed_starts``,
      ``breaky.restarts``, ``breaky.retries``, ``breaky.trips``,
      ``breaky.slow_calls``, ``breaky.fleet_holds``, ``breaky.reattempts``,
      ``breaky.hedges``, ``breaky.attempts_denied`` (counters): the
      :class:`~breaky.BreakerStatistics` fields of the same names.

    A keyed group has the points above only for its keys that are not ON
    (each as a breaker named ``group[key]``), and these, with a ``group``
    attribute, for all its keys at once: ``breaky.group.keys`` (gauge,
    ``{key}``, with a ``state`` attribute: how many live keys are in each
    state), ``breaky.group.failures``, ``breaky.group.pending`` and
    ``breaky.group.concurrency_limit`` (a gauge; summed over the live keys),
    ``breaky.group.calls`` (with an ``outcome``) and
    ``breaky.group.casts`` ... ``breaky.group.slow_calls`` (totals over every
    key the group had), ``breaky.group.forgotten`` and
    ``breaky.group.refused`` (keys forgotten; new keys refused at
    ``max_keys``).

    The attributes are named as the Prometheus collector's labels, so
    OpenTelemetry's Prometheus exporter shows the metric names and labels of
    :class:`breaky.prometheus.BreakyCollector` (and its own labels, such as
    the scope's name). Call it inside ``trio.run``;
    a collection from another thread (a periodic reader's) reads the breakers
    in the Trio thread through :func:`trio.from_thread.run_sync`.

    Raises:
        TypeError: ``supervisor`` is not a :class:`breaky.Supervisor`, or
            ``meter_provider`` is not an OpenTelemetry ``MeterProvider``.
        ValueError: ``supervisor`` is already instrumented on that meter.
        RuntimeError: called outside ``trio.run``.

    """
    reader = StatisticsReader.of(supervisor, who="instrument()")
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    elif not isinstance(cast("object", meter_provider), metrics.MeterProvider):
        msg = (
            "meter_provider must be an opentelemetry.metrics.MeterProvider or "
            f"None, got {meter_provider!r}"
        )
        raise TypeError(msg)
    meter = meter_provider.get_meter(_METER_NAME)
    with _observed_lock:
        observed = _observed.get(meter)
        if observed is None:
            observed = _observed[meter] = _Observed()
            _create_instruments(meter, observed)
            _create_group_instruments(meter, observed)
    with observed.lock:
        if any(r.supervisor is supervisor for r in observed.readers):
            msg = f"{supervisor!r} is already instrumented on this meter provider"
            raise ValueError(msg)
        observed.readers = (*observed.readers, reader)
    return Instrumentation(observed, reader)


def _create_instruments(meter: metrics.Meter, observed: _Observed) -> None:
    # Summed over breakers, it counts the breakers in each state. (A unit of
    # "1" would make OpenTelemetry's Prometheus exporter add "_ratio".)
    meter.create_observable_gauge(
        "breaky.state",
        [_callback(observed, _states, fresh=True)],
        "{breaker}",
        STATE_HELP,
    )
    meter.create_observable_up_down_counter(
        "breaky.failures",
        [_callback(observed, lambda s: [(s.failures, {})])],
        "{failure}",
        FAILURES_HELP,
    )
    meter.create_observable_up_down_counter(
        "breaky.pending",
        [_callback(observed, lambda s: [(s.pending, {})])],
        "{call}",
        PENDING_HELP,
    )
    meter.create_observable_gauge(
        "breaky.concurrency_limit",
        [_callback(observed, _limit)],
        "{call}",
        LIMIT_HELP,
    )
    meter.create_observable_counter(
        "breaky.calls", [_callback(observed, _outcomes)], "{call}", CALLS_HELP
    )
    for name, field, unit, text in COUNTERS:
        meter.create_observable_counter(
            f"breaky.{name}",
            [_callback(observed, _field_of(field))],
            unit,
            text,
        )


def _create_group_instruments(meter: metrics.Meter, observed: _Observed) -> None:
    meter.create_observable_gauge(
        "breaky.group.keys",
        [_group_callback(observed, _key_states)],
        "{key}",
        GROUP_KEYS_HELP,
    )
    meter.create_observable_up_down_counter(
        "breaky.group.failures",
        [_group_callback(observed, lambda s: [(s.failures, {})])],
        "{failure}",
        GROUP_FAILURES_HELP,
    )
    meter.create_observable_up_down_counter(
        "breaky.group.pending",
        [_group_callback(observed, lambda s: [(s.pending, {})])],
        "{call}",
        GROUP_PENDING_HELP,
    )
    meter.create_observable_gauge(
        "breaky.group.concurrency_limit",
        [_group_callback(observed, _limit)],
        "{call}",
        GROUP_LIMIT_HELP,
    )
    meter.create_observable_counter(
        "breaky.group.calls",
        [_group_callback(observed, _outcomes)],
        "{call}",
        GROUP_CALLS_HELP,
    )
    for name, field, unit, text in COUNTERS:
        meter.create_observable_counter(
            f"breaky.group.{name}",
            [_group_callback(observed, _field_of(field))],
            unit,
            text,
        )
    meter.create_observable_counter(
        "breaky.group.forgotten",
        [_group_callback(observed, lambda s: [(s.forgotten, {})])],
        "{key}",
        GROUP_FORGOTTEN_HELP,
    )
    meter.create_observable_counter(
        "breaky.group.refused",
        [_group_callback(observed, lambda s: [(s.refused, {})])],
        "{key}",
        GROUP_REFUSED_HELP,
    )


def _group_callback(
    observed: _Observed, points: Callable[[KeyedStatistics], Points]
) -> Callable[[metrics.CallbackOptions], Iterator[metrics.Observation]]:
    """A group instrument's callback: each group's ``points``, named."""

    def observe(_: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        for name, stats in observed.read_groups():
            for value, attributes in points(stats):
                yield metrics.Observation(value, {"group": name, **attributes})

    return observe


def _key_states(stats: KeyedStatistics) -> Points:
    for member in State:
        yield stats.states[member], {"state": state_label(member)}


def _callback(
    observed: _Observed,
    points: Callable[[BreakerStatistics], Points],
    *,
    fresh: bool = False,
) -> Callable[[metrics.CallbackOptions], Iterator[metrics.Observation]]:
    """An instrument's callback: each breaker's ``points``, named.

    ``fresh``: the collection's first callback, which reads the breakers.
    """

    def observe(_: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        for name, stats in observed.read(fresh=fresh):
            for value, attributes in points(stats):
                yield metrics.Observation(value, {"breaker": name, **attributes})

    return observe


def _states(stats: BreakerStatistics) -> Points:
    for member in State:
        yield int(stats.state is member), {"state": state_label(member)}


def _limit(stats: BreakerStatistics | KeyedStatistics) -> Points:
    limit = stats.concurrency_limit
    return [] if limit is None else [(limit, {})]


def _outcomes(stats: BreakerStatistics | KeyedStatistics) -> Points:
    for outcome, field in OUTCOMES:
        yield getattr(stats, field), {"outcome": outcome}


def _field_of(field: str) -> Callable[[BreakerStatistics | KeyedStatistics], Points]:
    return lambda stats: [(getattr(stats, field), {})]
