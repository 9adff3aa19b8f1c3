"""What a breaker is allowed to do, validated once, before anything starts."""

from __future__ import annotations

import math
from typing import Any, final

import attrs


def check_seconds(
    name: str,
    value: object,
    *,
    allow_none: bool = False,
    allow_zero: bool = False,
) -> float | None:
    """Return ``value`` as a float of seconds, or raise naming ``name``.

    Booleans are refused (``True`` is not one second); so are NaN and infinity,
    which would silently mean "never".
    """
    if value is None and allow_none:
        return None
    bound = ">= 0" if allow_zero else "> 0"
    expected = f"a finite number of seconds {bound}" + (
        " or None" if allow_none else ""
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be {expected}, got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        msg = f"{name} must be {expected}, got {value!r}"
        raise ValueError(msg)
    return float(value)


def check_count(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (not a bool), or raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int >= {minimum}, got {value!r}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be an int >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return value


def _threshold(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_count(attribute.name, value, minimum=1)


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value)


def _positive_or_none(
    _: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    check_seconds(attribute.name, value, allow_none=True)


@final
@attrs.frozen
class Policy:
    """The options of one circuit breaker.

    Attributes:
        failure_threshold: failures counted since the breaker last turned ON
            that turn it OFF.
        retry_timeout: seconds between start attempts while OFF.
        call_timeout: default seconds a call waits for its answer; ``None``
            waits as long as the caller's own cancel scopes allow.

    """

    failure_threshold: int = attrs.field(default=10, validator=_threshold)
    retry_timeout: float = attrs.field(default=10.0, validator=_positive)
    call_timeout: float | None = attrs.field(default=5.0, validator=_positive_or_none)
