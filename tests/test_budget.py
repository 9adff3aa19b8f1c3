"""The attempt budget, pure: a share of the calls plus a floor, over 10 s."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from breaky._core.budget import WINDOW, Budget


def test_a_quiet_budget_allows_the_floor() -> None:
    budget = Budget(0.2, 1.0)
    granted = [budget.withdraw(0.1 * i) for i in range(12)]
    assert granted == [True] * 10 + [False] * 2
    assert budget.allowed(1.2) == 0


def test_calls_add_their_share_once_looked_at() -> None:
    budget = Budget(0.5, 0.0)
    assert not budget.withdraw(0.0)  # the first look: nothing placed yet
    budget.firsts += 10
    assert budget.allowed(0.1) == pytest.approx(5)
    assert all(budget.withdraw(0.2) for _ in range(5))
    assert not budget.withdraw(0.3)


def test_calls_before_the_first_look_are_not_counted() -> None:
    budget = Budget(0.5, 0.0)
    budget.firsts += 100
    assert budget.allowed(50.0) == 0


def test_what_leaves_the_window_is_forgotten() -> None:
    budget = Budget(1.0, 0.0)
    budget.allowed(0.0)
    budget.firsts += 4
    assert all(budget.withdraw(1.0) for _ in range(4))
    assert not budget.withdraw(5.0)
    # The calls, placed at 0.0, leave first; the extras (at 1.0) later.
    assert budget.allowed(10.0) == -4
    budget.firsts += 6
    assert budget.allowed(10.6) == 6 - 4  # the six go in at 10.0, the last look
    assert budget.allowed(11.0) == 6 - 4
    assert budget.allowed(11.5) == 6  # the extras, kept a slice longer, leave
    assert budget.allowed(100.0) == 0  # long after: everything has left


def test_another_clock_starts_afresh() -> None:
    budget = Budget(1.0, 0.5)
    budget.allowed(1000.0)
    budget.firsts += 10
    assert budget.withdraw(1001.0)
    assert budget.allowed(3.0) == pytest.approx(5)  # a new run's earlier clock


def test_steady_traffic_earns_nearly_its_full_share() -> None:
    # 100 calls a second, one failing in ten: the look after each failure
    # places the calls, so few are lost to the lazy placing.
    budget = Budget(0.2, 1.0)
    granted = []
    for tick in range(3000):
        now = tick * 0.01
        budget.firsts += 1
        if tick % 10 == 0 and budget.withdraw(now):
            granted.append(now)
    last = [t for t in granted if t > granted[-1] - WINDOW]
    assert len(last) >= 0.9 * min(100, 0.2 * 1000 + 10)


events = st.lists(
    st.tuples(
        st.floats(0, 3, allow_nan=False),  # time passes
        st.integers(0, 20),  # calls made
        st.integers(0, 5),  # extra attempts wanted
    ),
    max_size=80,
)


@given(
    events,
    st.sampled_from([0.0, 0.1, 0.2, 1.0]),
    st.sampled_from([0.0, 0.3, 1.0]),
)
def test_the_extras_of_any_window_ending_at_one_are_bounded(
    steps: list[tuple[float, int, int]], share: float, per_second: float
) -> None:
    budget = Budget(share, per_second)
    now = 0.0
    calls: list[float] = []
    extras: list[float] = []
    for dt, made, wanted in steps:
        now += dt
        calls += [now] * made
        budget.firsts += made
        for _ in range(wanted):
            if budget.withdraw(now):
                extras.append(now)
                recent = [t for t in extras if t > now - WINDOW]
                recent_calls = [t for t in calls if t > now - WINDOW]
                assert len(recent) <= share * len(recent_calls) + per_second * WINDOW
