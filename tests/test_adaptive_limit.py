"""breaky.Adaptive's checks, and its learning state driven by hand (pure)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
import trio

import breaky
from breaky._core.places import Fixed, Places
from breaky._core.policy import Kind, policy_for

if TYPE_CHECKING:
    from breaky._core.adaptive import AdaptiveLimit


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"initial": "8"}, TypeError, r"initial must be an int >= 1, got '8'"),
        ({"initial": True}, TypeError, r"initial must be an int >= 1, got True"),
        ({"initial": 2.0}, TypeError, r"initial must be an int >= 1, got 2.0"),
        ({"initial": 0}, ValueError, r"initial must be an int >= 1, got 0"),
        ({"initial": 5, "minimum": 0}, ValueError, r"minimum must be .* got 0"),
        ({"initial": 5, "maximum": -1}, ValueError, r"maximum must be .* got -1"),
        ({"initial": 5, "minimum": 1.5}, TypeError, r"minimum must be .* got 1.5"),
        ({"initial": 1, "minimum": 2}, ValueError, r"initial must be within .*got 1"),
        ({"initial": 9, "maximum": 8}, ValueError, r"initial must be within .*got 9"),
        (
            {"initial": 5, "minimum": 6, "maximum": 4},
            ValueError,
            r"maximum must be >= minimum \(6\), got 4",
        ),
        ({"initial": 5, "tolerance": 1}, ValueError, r"tolerance .* > 1.0, got 1"),
        ({"initial": 5, "tolerance": "2"}, TypeError, r"tolerance .* got '2'"),
        ({"initial": 5, "probe_interval": 0}, ValueError, r"probe_interval .* got 0"),
        ({"initial": 5, "probe_interval": None}, TypeError, r"probe_interval .*None"),
    ],
)
def test_bad_bounds_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        breaky.Adaptive(**options)


def test_initial_is_required_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        breaky.Adaptive()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        breaky.Adaptive(8)  # type: ignore[misc]


def test_a_policy_takes_an_adaptive_limit_but_a_resource_breaker_does_not() -> None:
    limit = breaky.Adaptive(initial=8)
    assert breaky.Policy(max_concurrent=limit).max_concurrent == limit
    guard = breaky.Guard("api", max_concurrent=limit, max_queued=4)
    assert guard.policy.max_concurrent is limit
    with pytest.raises(TypeError, match=r"max_concurrent .* breaky.Adaptive .*'8'"):
        breaky.Policy(max_concurrent="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_concurrent means nothing"):
        policy_for(Kind.RESOURCE, None, {"max_concurrent": limit})


async def test_serve_refuses_a_bad_concurrency() -> None:
    errors: list[Exception] = []
    bad = ("2", 0, 1.5)

    async def echo(request: breaky.Request[Any, Any]) -> None:
        request.reply(request.message)  # pragma: no cover - never served

    async def resource(inbox: breaky.Inbox[Any, Any], *, task_status: Any) -> None:
        task_status.started()
        while len(errors) < len(bad):
            try:
                await inbox.serve(echo, concurrency=bad[len(errors)])  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:  # noqa: PERF203 - one each
                errors.append(exc)
        await trio.sleep_forever()

    async with breaky.open_supervisor() as sup:
        await sup.start_circuit_breaker("db", resource)
        await trio.testing.wait_all_tasks_blocked()
    assert [type(e) for e in errors] == [TypeError, ValueError, TypeError]
    assert all("concurrency must be an int >= 1" in str(e) for e in errors)
    assert "breaky.Adaptive" in str(errors[0])


def drive(
    limit: AdaptiveLimit,
    now: float,
    latency: float,
    in_flight: int,
    *,
    dropped: int = 0,
) -> float:
    """One round trip from ``now``: calls of ``latency``, placed after ``now``.

    The first ``dropped`` are dropped. Returns when the last one ended.
    """
    trips = limit.round_trips
    n = 0
    while limit.round_trips == trips:
        n += 1
        end = now + n * latency / 10 + latency
        limit.sample(end, latency, in_flight, dropped=n <= dropped)
    return end


def probed(spec: breaky.Adaptive, base: float = 0.01) -> tuple[AdaptiveLimit, float]:
    """A limit past its first probe, which measured ``base``."""
    limit = spec.start(random.Random(1))
    assert limit.unloaded_latency is None
    assert "unmeasured" in repr(limit)
    now = drive(limit, 0.0, base, 10)  # the first round trip tells nothing
    assert limit.current == spec.initial
    now = drive(limit, now, base, 10)  # the second ends in a probe
    assert limit.current == max(spec.minimum, spec.initial // 2)
    now = drive(limit, now, base, 10)  # as fast at half: nothing queued
    assert limit.current == spec.initial
    assert limit.unloaded_latency == pytest.approx(base)
    assert f"{base:.3g} s" in repr(limit)
    return limit, now


def test_the_limit_grows_while_nothing_queues_and_only_when_in_use() -> None:
    limit, now = probed(breaky.Adaptive(initial=16))
    now = drive(limit, now, 0.01, 3)  # 3 of 16 in use: no reason to grow
    assert limit.current == 16
    now = drive(limit, now, 0.01, 16)
    assert limit.current == 16 + 4  # its square root
    for _ in range(100):
        now = drive(limit, now, 0.01, limit.current)
    assert limit.current == 1000  # the maximum


def test_the_limit_shrinks_halfway_to_littles_law_once_calls_queue() -> None:
    limit, now = probed(breaky.Adaptive(initial=40))
    drive(limit, now, 0.02, 10)  # twice the unloaded latency
    # Halfway to the calls that would answer in 1.35x the unloaded latency.
    assert limit.current == int(40 * (1 + 1.35 / 2) / 2)
    within, now = probed(breaky.Adaptive(initial=40))
    drive(within, now, 0.013, 10)  # between 1.2x and 1.5x: hold
    assert within.current == 40
    far, now = probed(breaky.Adaptive(initial=40))
    drive(far, now, 0.1, 10)
    assert far.current == int(40 * (1 + 1.35 / 10) / 2)
    small, now = probed(breaky.Adaptive(initial=2))
    drive(small, now, 0.016, 2)  # 1.6x: halfway is less than one call
    assert small.current == 1


def test_calls_placed_before_a_round_trip_began_tell_nothing_of_it() -> None:
    limit, now = probed(breaky.Adaptive(initial=40))
    for _ in range(50):  # placed under an earlier limit, however slow
        limit.sample(now + 0.001, 1.0, 40, dropped=False)
    assert limit.current == 40
    drive(limit, now, 0.01, 40)
    assert limit.current > 40


def test_drops_cut_the_limit_by_half_their_share() -> None:
    limit, now = probed(breaky.Adaptive(initial=40))
    drive(limit, now, 0.012, 10, dropped=5)
    assert limit.current == int(40 * (1 - 0.5 / 2))
    every, now = probed(breaky.Adaptive(initial=40))
    drive(every, now, 0.012, 10, dropped=10)
    assert every.current == 20


def test_the_limit_stays_within_its_bounds() -> None:
    limit, now = probed(breaky.Adaptive(initial=4, minimum=3, maximum=5))
    for _ in range(20):
        now = drive(limit, now, 0.01, 5)
    assert limit.current == 5
    for _ in range(3):
        now = drive(limit, now, 0.05, 5, dropped=10)
    assert limit.current == 3


def test_a_probe_halves_then_lowers_by_thirds_while_calls_get_faster() -> None:
    limit = breaky.Adaptive(initial=64, probe_interval=5).start(random.Random(2))

    def latency(calls: int) -> float:  # 8 workers of 10 ms, the rest queue
        return 0.01 * max(1.0, calls / 8)

    now = drive(limit, 0.0, latency(64), 10)
    now = drive(limit, now, latency(64), 10)  # the second round trip: a probe
    steps = []
    while limit.unloaded_latency is None:
        step = limit.current
        steps.append(step)
        for _ in range(10):  # placed before the step began: ignored
            limit.sample(now, 1.0, step, dropped=False)
        now = drive(limit, now, latency(step), step, dropped=3)  # drops: ignored
    # 64 / 2, then by thirds while 10% faster: 6 calls are as fast as 4.
    assert steps == [32, 21, 14, 9, 6, 4]
    assert limit.unloaded_latency == pytest.approx(0.01)
    assert limit.current == 64
    # The next probe is due after probe_interval (jittered by 15%).
    now = drive(limit, now, 0.01, 64)
    assert limit.current > 64
    now = drive(limit, now + 6, 0.01, limit.current)
    assert limit.current == 72 // 2


def test_a_probe_stops_at_the_minimum() -> None:
    limit = breaky.Adaptive(initial=4, minimum=2).start(random.Random(2))
    now = drive(limit, 0.0, 0.08, 4)
    now = drive(limit, now, 0.08, 4)
    assert limit.current == 2
    drive(limit, now, 0.04, 2)  # still faster: no lower than the minimum
    assert limit.current == 4
    assert limit.unloaded_latency == pytest.approx(0.04)


def test_calls_faster_than_measured_lower_the_unloaded_latency() -> None:
    limit, now = probed(breaky.Adaptive(initial=40))
    now = drive(limit, now, 0.01, 40)  # 40 in flight: round trips of 20 calls
    drive(limit, now, 0.005, 40)
    assert limit.unloaded_latency == pytest.approx(0.005)
    few, now = probed(breaky.Adaptive(initial=40))
    drive(few, now, 0.005, 10)  # too few calls to say
    assert few.unloaded_latency == pytest.approx(0.01)


def test_a_limit_lowered_in_vain_measures_again() -> None:
    # The dependency got slower per call: halving the limit does not help.
    limit, now = probed(breaky.Adaptive(initial=256))
    for _ in range(4):  # the fourth round trip finds 256 halved, in vain
        now = drive(limit, now, 0.03, 10)
    lowered = limit.current
    assert lowered == int(256 * ((1 + 1.35 / 3) / 2) ** 4)
    drive(limit, now, 0.03, 10)  # the fifth: a probe instead
    assert limit.current == lowered // 2


def test_a_limit_lowered_at_the_minimum_in_vain_measures_again() -> None:
    limit, now = probed(breaky.Adaptive(initial=2), base=0.01)
    now = drive(limit, now, 0.03, 2)
    assert limit.current == 1
    now = drive(limit, now, 0.03, 1)  # the fewest calls, and no faster
    assert limit.unloaded_latency == pytest.approx(0.01)
    now = drive(limit, now, 0.03, 1)  # so a probe begins
    drive(limit, now, 0.03, 1)  # and measures the latency now
    assert limit.unloaded_latency == pytest.approx(0.03)


def test_lowering_that_helps_is_not_in_vain() -> None:
    limit, now = probed(breaky.Adaptive(initial=256))
    for _ in range(8):
        before = limit.current
        # 20 workers of 10 ms: the latency falls with the limit.
        now = drive(limit, now, 0.01 * before / 20, 10)
        # Lowered halfway to Little's law each time, never halved by a probe.
        assert 0.55 * before < limit.current <= before
    assert limit.unloaded_latency == pytest.approx(0.01)
    assert 20 < limit.current < 1.5 * 20


async def test_a_raised_limit_hands_places_at_once_and_a_lowered_one_waits() -> None:
    class Stepping:
        current = 1

        def sample(self, *_: object, **__: object) -> None:
            self.current = 3 if self.current == 1 else 1

    places = Places(Stepping(), None)
    assert Places(2, None).limit == 2
    assert Places(breaky.Adaptive(initial=5), None).limit == 5
    assert places.take_nowait()
    handed: list[int] = []

    async def waiter(n: int) -> None:
        assert await places.wait()
        handed.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(waiter, n)
            await trio.testing.wait_all_tasks_blocked()
        places.give_back(trio.current_time())  # the limit rises to 3
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(handed) == [0, 1, 2]
    assert places.limit == 3
    places.give_back(trio.current_time())  # and falls to 1: 2 still held
    assert places.limit == 1
    assert not places.take_nowait()
    places.give_back()
    places.give_back()
    assert places.take_nowait()


def test_a_fixed_limit_learns_nothing() -> None:
    fixed = Fixed(4)
    fixed.sample(1.0, 0.5, 4, dropped=True)
    assert fixed.current == 4
