"""breaky.opentelemetry: a collection shows exactly what statistics() says."""

from __future__ import annotations

from typing import TYPE_CHECKING

import opentelemetry.metrics
import pytest
import trio
from metrics_support import COUNTERS, OUTCOMES, STATES, scripted_supervisor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    InMemoryMetricReader,
    MetricsData,
    Sum,
)
from support import World, service

import breaky
import breaky.opentelemetry
from breaky.opentelemetry import instrument

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock

Points = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def collect(reader: InMemoryMetricReader) -> tuple[Points, dict[str, tuple[str, str]]]:
    return points_of(reader.get_metrics_data())


def points_of(data: MetricsData | None) -> tuple[Points, dict[str, tuple[str, str]]]:
    """The data points by name and attributes, and each metric's kind and unit."""
    points: Points = {}
    kinds: dict[str, tuple[str, str]] = {}
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "breaky"
            for metric in scope.metrics:
                assert metric.description, metric.name
                if isinstance(metric.data, Sum):
                    kind = "Counter" if metric.data.is_monotonic else "UpDownCounter"
                else:
                    assert isinstance(metric.data, Gauge)
                    kind = "Gauge"
                kinds[metric.name] = (kind, metric.unit or "")
                for point in metric.data.data_points:
                    attributes = point.attributes or {}
                    key = (metric.name, tuple(sorted(attributes.items())))
                    assert key not in points
                    points[key] = point.value
    return points, kinds


def expected(*sups: breaky.Supervisor) -> Points:
    """What a collection must show, built from statistics() alone."""
    points: Points = {}
    for sup in sups:
        for name in sup:
            stats = sup[name].statistics()
            b = ("breaker", name)
            for state, label in STATES.items():
                is_now = float(stats.state is state)
                points["breaky.state", (b, ("state", label))] = is_now
            points["breaky.failures", (b,)] = stats.failures
            points["breaky.pending", (b,)] = stats.pending
            if stats.concurrency_limit is not None:
                points["breaky.concurrency_limit", (b,)] = stats.concurrency_limit
            for outcome, field in OUTCOMES.items():
                answered = getattr(stats, field)
                points["breaky.calls", (b, ("outcome", outcome))] = answered
            for field in COUNTERS:
                points[f"breaky.{field}", (b,)] = getattr(stats, field)
    return points


def breakers_in(points: Points) -> set[str]:
    return {dict(attributes)["breaker"] for _, attributes in points}


def provider() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


async def test_a_collection_shows_every_statistic(autojump_clock: Clock) -> None:
    meters, reader = provider()
    async with scripted_supervisor() as sup:
        instrumentation = instrument(sup, meters)
        assert instrumentation.instrumented
        points, kinds = collect(reader)
        assert points == expected(sup)
    assert breakers_in(points) == {"db", "idle", "forced"}
    ones = [dict(a) for (n, a), v in points.items() if n == "breaky.state" and v]
    assert sorted((o["breaker"], o["state"]) for o in ones) == [
        ("db", "on"),
        ("forced", "forced_off"),
        ("idle", "on"),
    ]
    assert kinds == {
        "breaky.state": ("Gauge", "{breaker}"),
        "breaky.failures": ("UpDownCounter", "{failure}"),
        "breaky.pending": ("UpDownCounter", "{call}"),
        "breaky.calls": ("Counter", "{call}"),
        "breaky.casts": ("Counter", "{cast}"),
        "breaky.crashes": ("Counter", "{crash}"),
        "breaky.failed_starts": ("Counter", "{start}"),
        "breaky.restarts": ("Counter", "{restart}"),
        "breaky.retries": ("Counter", "{retry}"),
        "breaky.trips": ("Counter", "{trip}"),
        "breaky.slow_calls": ("Counter", "{call}"),
        "breaky.fleet_holds": ("Counter", "{hold}"),
        "breaky.reattempts": ("Counter", "{attempt}"),
        "breaky.hedges": ("Counter", "{attempt}"),
        "breaky.attempts_denied": ("Counter", "{attempt}"),
    }
    meters.shutdown()


async def test_uninstrument_stops_reporting_and_can_be_undone(
    autojump_clock: Clock,
) -> None:
    meters, reader = provider()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World())
        await db.call("x")
        instrumentation = instrument(sup, meters)
        assert breakers_in(collect(reader)[0]) == {"db"}
        instrumentation.uninstrument()
        assert not instrumentation.instrumented
        assert collect(reader)[0] == {}
        instrumentation.uninstrument()  # again: nothing to do
        # The instruments stay on the meter; a new instrument() reports again.
        again = instrument(sup, meters)
        points, _ = collect(reader)
        assert points == expected(sup)
        again.uninstrument()
    meters.shutdown()


async def test_two_supervisors_on_one_meter_provider(autojump_clock: Clock) -> None:
    meters, reader = provider()
    async with breaky.open_supervisor() as one, breaky.open_supervisor() as two:
        await one.start_circuit_breaker("a", service, World())
        await two.start_circuit_breaker("b", service, World())
        first = instrument(one, meters)
        instrument(two, meters)
        assert collect(reader)[0] == expected(one, two)
        with pytest.raises(ValueError, match="already instrumented"):
            instrument(one, meters)
        first.uninstrument()
        assert collect(reader)[0] == expected(two)
        # Breakers come and go between collections.
        await two.start_circuit_breaker("c", service, World())
        assert breakers_in(collect(reader)[0]) == {"b", "c"}
        await two.stop_circuit_breaker("b")
        assert breakers_in(collect(reader)[0]) == {"c"}
    meters.shutdown()


async def test_the_global_meter_provider_by_default(
    autojump_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    meters, reader = provider()
    monkeypatch.setattr(opentelemetry.metrics, "get_meter_provider", lambda: meters)
    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", service, World())
        instrument(sup)
        assert collect(reader)[0] == expected(sup)
    meters.shutdown()


async def test_a_collection_from_another_thread_reads_in_trio(
    autojump_clock: Clock,
) -> None:
    meters, reader = provider()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(), call_timeout=None)
        for n in range(3):
            await db.call(n)
        instrument(sup, meters)
        data = await trio.to_thread.run_sync(reader.get_metrics_data)
        points, _ = points_of(data)
        assert points == expected(sup)
        assert points["breaky.calls", (("breaker", "db"), ("outcome", "reply"))] == 3
    meters.shutdown()


async def test_bad_input_is_a_clear_type_error() -> None:
    meters, _ = provider()
    with pytest.raises(TypeError, match=r"supervisor must be a breaky\.Supervisor.*42"):
        instrument(42, meters)  # type: ignore[arg-type]
    async with breaky.open_supervisor() as sup:
        with pytest.raises(
            TypeError, match=r"meter_provider must be .*MeterProvider.*'x'"
        ):
            instrument(sup, "x")  # type: ignore[arg-type]
    meters.shutdown()


async def test_the_concurrency_limit_gauge(autojump_clock: Clock) -> None:
    meters, reader = provider()
    async with breaky.open_supervisor() as sup:
        sup.guard("api", max_concurrent=breaky.Adaptive(initial=6))
        sup.guard("plain")
        hosts = sup.keyed_guard("hosts", max_concurrent=3)

        async def ok() -> str:
            return "ok"

        for host in ("a", "b"):
            assert await hosts.run(host, ok) == "ok"
        instrument(sup, meters)
        points, kinds = collect(reader)
    limits = {
        dict(attributes)["breaker"]: value
        for (name, attributes), value in points.items()
        if name == "breaky.concurrency_limit"
    }
    assert limits == {"api": 6}
    assert points["breaky.group.concurrency_limit", (("group", "hosts"),)] == 6
    assert kinds["breaky.concurrency_limit"] == ("Gauge", "{call}")
    assert kinds["breaky.group.concurrency_limit"] == ("Gauge", "{call}")
