"""The checks of a policy's attempt options (re-attempts, hedges, the budget).

Kept apart from :mod:`breaky._core.policy` so that the options of one idea
read together; the fields themselves are declared on ``Policy``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import attrs

# The options that mean nothing for a resource breaker, and why.
NAMES = (
    "attempts",
    "attempt_on",
    "attempt_wait",
    "max_attempt_wait",
    "attempt_budget",
    "attempt_budget_min",
    "hedge_after",
)
FOR_A_RESOURCE = (
    "re-attempts and hedges are a guard's; a resource breaker's caller decides "
    "whether to send a request again"
)


def _number(value: object, msg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    return value


def share(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A share: a number from 0 to 1."""
    msg = f"{attribute.name} must be a number >= 0 and <= 1, got {value!r}"
    if not 0 <= _number(value, msg) <= 1:  # NaN fails this too
        raise ValueError(msg)


def wait(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Seconds to wait: finite, >= 0."""
    msg = f"{attribute.name} must be a finite number of seconds >= 0, got {value!r}"
    number = _number(value, msg)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(msg)


def per_second(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A rate: finite, >= 0."""
    msg = f"{attribute.name} must be a finite number >= 0 (per second), got {value!r}"
    number = _number(value, msg)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(msg)


def check_together(
    attempts: int, attempt_wait: float, max_attempt_wait: float, hedge_after: object
) -> None:
    """What the options must be together (each was checked alone first)."""
    if max_attempt_wait < attempt_wait:
        msg = (
            f"max_attempt_wait must be >= attempt_wait ({attempt_wait!r}), "
            f"got {max_attempt_wait!r}"
        )
        raise ValueError(msg)
    if hedge_after is not None and attempts < 2:
        msg = (
            "hedge_after needs attempts >= 2 (a hedge is one of the attempts), "
            f"got attempts={attempts!r}"
        )
        raise ValueError(msg)
