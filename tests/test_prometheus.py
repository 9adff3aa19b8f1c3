"""breaky.prometheus: a scrape shows exactly what statistics() says."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
from metrics_support import COUNTERS, OUTCOMES, STATES, scripted_supervisor
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import World, service

import breaky
from breaky.prometheus import BreakyCollector

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """The samples of a scrape by name and labels, and each family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples
            samples[key] = sample.value
    return samples, types


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    return parse(generate_latest(registry).decode())


def expected(sup: breaky.Supervisor) -> Samples:
    """What a scrape must show, built from statistics() alone."""
    samples: Samples = {}
    for name in sup:
        stats = sup[name].statistics()
        b = ("breaker", name)
        for state, label in STATES.items():
            samples["breaky_state", (b, ("state", label))] = float(stats.state is state)
        samples["breaky_failures", (b,)] = stats.failures
        samples["breaky_pending", (b,)] = stats.pending
        if stats.concurrency_limit is not None:
            samples["breaky_concurrency_limit", (b,)] = stats.concurrency_limit
        for outcome, field in OUTCOMES.items():
            samples["breaky_calls_total", (b, ("outcome", outcome))] = getattr(
                stats, field
            )
        for field in COUNTERS:
            samples[f"breaky_{field}_total", (b,)] = getattr(stats, field)
    return samples


def breakers_in(samples: Samples) -> set[str]:
    return {dict(labels)["breaker"] for _, labels in samples}


async def test_a_scrape_shows_every_statistic(autojump_clock: Clock) -> None:
    async with scripted_supervisor() as sup:
        registry = CollectorRegistry()
        registry.register(BreakyCollector(sup))
        samples, types = scrape(registry)
        assert samples == expected(sup)
        # The outcomes and the pending calls add up to the calls made.
        answered = sum(v for (n, _), v in samples.items() if n == "breaky_calls_total")
        pending = sum(v for (n, _), v in samples.items() if n == "breaky_pending")
        assert answered + pending == sum(sup[name].statistics().calls for name in sup)
    assert breakers_in(samples) == {"db", "idle", "forced"}
    assert types == {
        "breaky_state": "gauge",
        "breaky_failures": "gauge",
        "breaky_pending": "gauge",
        "breaky_concurrency_limit": "gauge",
        "breaky_calls": "counter",
        **{f"breaky_{field}": "counter" for field in COUNTERS},
    }


async def test_the_state_gauge_has_exactly_one_1_per_breaker(
    autojump_clock: Clock,
) -> None:
    async with scripted_supervisor() as sup:
        registry = CollectorRegistry()
        registry.register(BreakyCollector(sup))
        samples, _ = scrape(registry)
    ones: dict[str, list[str]] = {}
    for (metric, labels), value in samples.items():
        if metric == "breaky_state":
            assert value in {0.0, 1.0}
            if value:
                ones.setdefault(dict(labels)["breaker"], []).append(
                    dict(labels)["state"]
                )
    assert ones == {"db": ["on"], "idle": ["on"], "forced": ["forced_off"]}


async def test_breakers_appear_and_disappear_on_the_next_scrape(
    autojump_clock: Clock,
) -> None:
    registry = CollectorRegistry()
    async with breaky.open_supervisor() as sup:
        registry.register(BreakyCollector(sup))
        samples, types = scrape(registry)
        assert samples == {}
        assert "breaky_state" in types  # the families are there, empty
        await sup.start_circuit_breaker("a", service, World())
        await sup.start_circuit_breaker("b", service, World())
        assert breakers_in(scrape(registry)[0]) == {"a", "b"}
        await sup.stop_circuit_breaker("a")
        samples, _ = scrape(registry)
        assert breakers_in(samples) == {"b"}
        assert samples == expected(sup)
    assert scrape(registry)[0] == {}  # the supervisor closed


async def test_a_scrape_from_another_thread_reads_in_trio(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", service, World(), call_timeout=None)
        for n in range(5):
            await db.call(n)
        registry = CollectorRegistry()
        registry.register(BreakyCollector(sup))
        # statistics() reads Trio's clock, which only the Trio thread can.
        with pytest.raises(RuntimeError):
            await trio.to_thread.run_sync(db.statistics)
        text = await trio.to_thread.run_sync(generate_latest, registry)
        samples, _ = parse(text.decode())
        assert samples == expected(sup)
        assert (
            samples["breaky_calls_total", (("breaker", "db"), ("outcome", "reply"))]
            == 5
        )


def test_a_scrape_after_trio_run_returned_shows_no_breakers() -> None:
    async def main() -> tuple[CollectorRegistry, BreakyCollector]:
        registry = CollectorRegistry()
        async with breaky.open_supervisor() as sup:
            await sup.start_circuit_breaker("db", service, World())
            collector = BreakyCollector(sup)
            registry.register(collector)
        return registry, collector

    registry, collector = trio.run(main)
    samples, types = scrape(registry)
    assert samples == {}
    assert "breaky_calls" in types

    async def scrape_in_another_run() -> None:
        list(collector.collect())

    with pytest.raises(RuntimeError, match="another Trio run"):
        trio.run(scrape_in_another_run)


async def test_registering_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(self: breaky.Supervisor) -> Any:
        raise AssertionError

    async with breaky.open_supervisor() as sup:
        collector = BreakyCollector(sup)
        # Fault injection: reading the supervisor's breakers fails.
        monkeypatch.setattr(breaky.Supervisor, "__iter__", unreadable)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(collector)
        with pytest.raises(AssertionError):
            generate_latest(registry)
        monkeypatch.undo()


async def test_bad_input_is_a_clear_type_error() -> None:
    with pytest.raises(
        TypeError, match=r"supervisor must be a breaky\.Supervisor.*'sup'"
    ):
        BreakyCollector("sup")  # type: ignore[arg-type]


def test_made_outside_trio_is_a_clear_error() -> None:
    async def main() -> breaky.Supervisor:
        async with breaky.open_supervisor() as sup:
            return sup

    sup = trio.run(main)
    with pytest.raises(RuntimeError, match=r"inside trio\.run"):
        BreakyCollector(sup)


async def test_a_guards_attempts_are_scraped(autojump_clock: Clock) -> None:
    registry = CollectorRegistry()
    async with breaky.open_supervisor() as sup:
        registry.register(BreakyCollector(sup))
        api = sup.guard(
            "api", attempts=3, hedge_after=1, attempt_budget_min=0.1, call_timeout=None
        )
        runs: list[float] = []

        async def slow_then_down() -> None:
            runs.append(trio.current_time())
            await trio.sleep(5 if len(runs) == 1 else 0)
            raise ConnectionError

        # The first runs 5 s; a hedge at 1 s fails; the next, a hedge at 2 s,
        # is beyond the budget (one extra attempt per 10 s): denied; and so is
        # a re-attempt once the first has failed too.
        with pytest.raises(ConnectionError):
            await api.run(slow_then_down)
        samples, types = scrape(registry)
        assert samples == expected(sup)
        b = ("breaker", "api")
        assert samples["breaky_hedges_total", (b,)] == 1.0
        assert samples["breaky_attempts_denied_total", (b,)] == 2.0
        assert samples["breaky_reattempts_total", (b,)] == 0.0
        assert types["breaky_reattempts"] == "counter"


async def test_a_supervisors_guards_are_scraped_too(autojump_clock: Clock) -> None:
    registry = CollectorRegistry()
    async with breaky.open_supervisor() as sup:
        registry.register(BreakyCollector(sup))
        api = sup.guard("api", failure_threshold=1, call_timeout=None)

        async def down() -> None:
            await trio.lowlevel.checkpoint()
            raise ConnectionError

        with pytest.raises(ConnectionError):
            await api.run(down)
        assert await api.run(down) is breaky.OFF
        samples, _ = scrape(registry)
        assert samples == expected(sup)
        b = ("breaker", "api")
        assert samples["breaky_state", (b, ("state", "off"))] == 1.0
        assert samples["breaky_calls_total", (b, ("outcome", "off"))] == 1.0
        assert samples["breaky_trips_total", (b,)] == 1.0


async def test_the_concurrency_limit_gauge(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        sup.guard("api", max_concurrent=breaky.Adaptive(initial=6))
        sup.guard("plain")
        hosts = sup.keyed_guard("hosts", max_concurrent=3, failure_threshold=1)

        async def ok() -> str:
            return "ok"

        async def down() -> None:
            raise ConnectionRefusedError

        for host in ("a", "b"):
            assert await hosts.run(host, ok) == "ok"
        with pytest.raises(ConnectionRefusedError):
            await hosts.run("c", down)  # OFF: its own series too
        registry = CollectorRegistry()
        registry.register(BreakyCollector(sup))
        samples, _ = scrape(registry)
    limits = {
        dict(labels)["breaker"]: value
        for (name, labels), value in samples.items()
        if name == "breaky_concurrency_limit"
    }
    assert limits == {"api": 6, "hosts[c]": 3}  # none without a limit
    assert samples["breaky_group_concurrency_limit", (("group", "hosts"),)] == 9
