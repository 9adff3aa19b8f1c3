"""A keyed group in the exporters: aggregated, and per key only when not ON."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio
from metrics_support import COUNTERS, OUTCOMES, STATES
from prometheus_client import CollectorRegistry
from test_opentelemetry import collect, provider
from test_prometheus import scrape

import breaky
from breaky.opentelemetry import instrument
from breaky.prometheus import BreakyCollector

if TYPE_CHECKING:
    import pytest
    from trio.testing import MockClock as Clock

HOSTS = 100
DEAD = 6  # of 100: above the documented alert's 5%


async def ok() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


async def down() -> None:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError


async def crawl(sup: breaky.Supervisor) -> breaky.KeyedGuard:
    """A hundred hosts, six of them dead (OFF), one counting a failure."""
    sup.guard("plain")
    hosts = sup.keyed_guard("upstream", failure_threshold=2, max_keys=HOSTS)
    for n in range(HOSTS):
        await hosts.run(f"host-{n}", ok)
    for n in range(DEAD):
        for _ in range(2):
            with contextlib.suppress(ConnectionRefusedError):
                await hosts.run(f"host-{n}", down)
    hosts[f"host-{HOSTS - 1}"].failure()
    assert await hosts.run("one too many", ok) == "ok"  # host-6 is evicted
    return hosts


def group_expected(stats: breaky.KeyedStatistics) -> dict[str, float]:
    """The group's series by name and label value (prometheus naming)."""
    series: dict[str, float] = {
        f"keys {label}": stats.states[state] for state, label in STATES.items()
    }
    series["failures"] = stats.failures
    series["pending"] = stats.pending
    for outcome, field in OUTCOMES.items():
        series[f"calls {outcome}"] = getattr(stats, field)
    for field in COUNTERS:
        series[field] = getattr(stats, field)
    series["forgotten"] = stats.forgotten
    series["refused"] = stats.refused
    return series


async def test_prometheus_shows_a_group_without_a_series_per_healthy_key(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = await crawl(sup)
        registry = CollectorRegistry()
        registry.register(BreakyCollector(sup))
        samples, types = scrape(registry)
        stats = hosts.statistics()
    breakers = {
        dict(labels)["breaker"] for (name, labels) in samples if name == "breaky_state"
    }
    assert breakers == {"plain", *(f"upstream[host-{n}]" for n in range(DEAD))}
    off = samples["breaky_state", (("breaker", "upstream[host-0]"), ("state", "off"))]
    assert off == 1.0
    g = ("group", "upstream")
    seen: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if not name.startswith("breaky_group_"):
            continue
        assert dict(labels)["group"] == "upstream"
        short = name.removeprefix("breaky_group_").removesuffix("_total")
        rest = [v for k, v in labels if k != "group"]
        seen[" ".join([short, *rest])] = value
    assert seen == group_expected(stats)
    assert samples["breaky_group_keys", (g, ("state", "on"))] == HOSTS - DEAD
    assert samples["breaky_group_keys", (g, ("state", "off"))] == DEAD
    assert samples["breaky_group_forgotten_total", (g,)] == 1
    assert samples["breaky_group_calls_total", (g, ("outcome", "reply"))] == HOSTS + 1
    # The documented alert: more than 5% of the group's keys OFF.
    keys = [v for (n, labels), v in samples.items() if n == "breaky_group_keys"]
    assert samples["breaky_group_keys", (g, ("state", "off"))] / sum(keys) > 0.05
    assert types["breaky_group_keys"] == "gauge"
    assert types["breaky_group_calls"] == "counter"
    assert types["breaky_group_refused"] == "counter"


async def test_opentelemetry_shows_a_group_without_a_point_per_healthy_key(
    autojump_clock: Clock,
) -> None:
    meters, reader = provider()
    async with breaky.open_supervisor() as sup:
        hosts = await crawl(sup)
        instrument(sup, meters)
        points, kinds = collect(reader)
        stats = hosts.statistics()
    meters.shutdown()
    breakers = {dict(a)["breaker"] for (name, a) in points if name == "breaky.state"}
    assert breakers == {"plain", *(f"upstream[host-{n}]" for n in range(DEAD))}
    seen: dict[str, float] = {}
    for (name, attributes), value in points.items():
        if not name.startswith("breaky.group."):
            continue
        assert dict(attributes)["group"] == "upstream"
        rest = [v for k, v in attributes if k != "group"]
        seen[" ".join([name.removeprefix("breaky.group."), *rest])] = value
    assert seen == group_expected(stats)
    assert kinds["breaky.group.keys"] == ("Gauge", "{key}")
    assert kinds["breaky.group.calls"] == ("Counter", "{call}")
    assert kinds["breaky.group.failures"] == ("UpDownCounter", "{failure}")
    assert kinds["breaky.group.forgotten"] == ("Counter", "{key}")


async def test_a_supervisor_without_groups_has_no_group_series(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        sup.guard("plain")
        registry = CollectorRegistry()
        registry.register(BreakyCollector(sup))
        _, types = scrape(registry)
    assert not [name for name in types if name.startswith("breaky_group")]


async def test_one_collection_reads_a_group_once(
    autojump_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = breaky.KeyedGuard.statistics

    def counted(self: breaky.KeyedGuard) -> breaky.KeyedStatistics:
        reads.append(1)
        return original(self)

    monkeypatch.setattr(breaky.KeyedGuard, "statistics", counted)
    meters, reader = provider()
    async with breaky.open_supervisor() as sup:
        hosts = await crawl(sup)
        instrument(sup, meters)
        collect(reader)
        assert len(reads) == 1  # not once per instrument
        await hosts.run("new", ok)
        points, _ = collect(reader)
        assert len(reads) == 2  # each collection reads again
        keys = ("breaky.group.keys", (("group", "upstream"), ("state", "on")))
        assert points[keys] == hosts.statistics().states[breaky.State.ON]
    meters.shutdown()
