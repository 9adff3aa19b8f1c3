"""The attempt options: defaults, checks by name, and where they mean nothing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest
import trio

import breaky
from breaky import Policy

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock


def test_the_defaults_make_one_attempt() -> None:
    policy = Policy()
    assert (policy.attempts, policy.attempt_on, policy.hedge_after) == (1, None, None)
    assert (policy.attempt_wait, policy.max_attempt_wait) == (0.05, 1.0)
    assert (policy.attempt_budget, policy.attempt_budget_min) == (0.2, 1.0)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"attempts": 0}, ValueError, r"attempts must be an int >= 1, got 0"),
        ({"attempts": 2.0}, TypeError, r"attempts must be an int >= 1, got 2.0"),
        ({"attempts": True}, TypeError, r"attempts must be an int >= 1, got True"),
        (
            {"attempt_on": "Down"},
            TypeError,
            r"attempt_on must be an Exception .*'Down'",
        ),
        ({"attempt_on": (KeyError, 3)}, TypeError, r"attempt_on must be .*3\)"),
        ({"attempt_on": BaseException}, TypeError, r"attempt_on must be an Exception"),
        ({"attempt_wait": -1}, ValueError, r"attempt_wait must be a finite number of "),
        ({"attempt_wait": math.inf}, ValueError, r"attempt_wait .* got inf"),
        ({"attempt_wait": "1"}, TypeError, r"attempt_wait .* got '1'"),
        ({"max_attempt_wait": math.nan}, ValueError, r"max_attempt_wait .* got nan"),
        (
            {"attempt_wait": 2},
            ValueError,
            r"max_attempt_wait must be >= attempt_wait \(2\), got 1.0",
        ),
        ({"attempt_budget": 1.5}, ValueError, r"attempt_budget must be a number >= 0 "),
        ({"attempt_budget": math.nan}, ValueError, r"attempt_budget .* got nan"),
        ({"attempt_budget": None}, TypeError, r"attempt_budget .* got None"),
        (
            {"attempt_budget_min": -1},
            ValueError,
            r"attempt_budget_min must be a finite",
        ),
        ({"attempt_budget_min": math.inf}, ValueError, r"attempt_budget_min .* inf"),
        ({"attempt_budget_min": False}, TypeError, r"attempt_budget_min .* got False"),
        ({"hedge_after": 0}, ValueError, r"hedge_after must be a finite number of "),
        (
            {"hedge_after": 0.1},
            ValueError,
            (
                r"hedge_after needs attempts >= 2 \(a hedge is one of the "
                r"attempts\), got attempts=1"
            ),
        ),
    ],
)
def test_bad_attempt_options_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Policy(**options)
    with pytest.raises(error, match=match):
        breaky.Guard("api", **options)


def test_zero_waits_and_budgets_are_allowed() -> None:
    policy = Policy(
        attempts=2,
        attempt_wait=0,
        max_attempt_wait=0,
        attempt_budget=0,
        attempt_budget_min=0,
        hedge_after=0.01,
    )
    assert policy.attempt_budget == 0


@pytest.mark.parametrize(
    "option",
    [
        {"attempts": 2},
        {"attempt_on": KeyError},
        {"attempt_wait": 0.1},
        {"max_attempt_wait": 2.0},
        {"attempt_budget": 0.5},
        {"attempt_budget_min": 2.0},
        {"attempts": 2, "hedge_after": 0.1},
    ],
    ids=lambda option: next(iter(option)),
)
async def test_a_resource_breaker_refuses_them(
    autojump_clock: Clock, option: dict[str, Any]
) -> None:
    async def resource(
        inbox: breaky.Inbox[Any, Any],
        *args: object,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()

    name = next(iter(option))
    async with breaky.open_supervisor() as sup:
        with pytest.raises(ValueError, match=rf"{name} means nothing for a resource"):
            await sup.start_circuit_breaker("db", resource, **option)
        with pytest.raises(ValueError, match="re-attempts and hedges are a guard's"):
            sup.keyed_breaker("shards", resource, **option)
        sup.keyed_guard("fine", **option)  # a guard takes them


def test_a_policy_with_them_is_shared_by_guards() -> None:
    policy = Policy(attempts=3, hedge_after=0.2)
    api = breaky.Guard("api", policy=policy, attempt_wait=0.01)
    assert api.policy.attempts == 3
    assert api.policy.attempt_wait == 0.01
