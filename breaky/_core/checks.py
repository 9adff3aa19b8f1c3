"""The checks of every option, each naming what was wrong and what was expected."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, cast

from .adaptive import Adaptive

if TYPE_CHECKING:
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


def threshold(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_count(attribute.name, value, minimum=1)


def positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value)


def positive_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seconds(attribute.name, value, allow_none=True)


def count_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be an int >= 1 or None, got {value!r}"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(msg)
    if value < 1:
        raise ValueError(msg)


def limit_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, Adaptive):
        return  # checked when it was made
    msg = (
        f"{attribute.name} must be an int >= 1, a breaky.Adaptive or None, "
        f"got {value!r}"
    )
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(msg)
    if value < 1:
        raise ValueError(msg)


def backoff(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be a finite number >= 1.0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(msg)


def jitter(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be a number >= 0.0 and < 1.0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not 0 <= value < 1:  # NaN fails this too
        raise ValueError(msg)


def rate(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be a number > 0 and <= 1, or None, got {value!r}"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not 0 < value <= 1:  # NaN fails this too
        raise ValueError(msg)


def exceptions(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return  # the kind's default
    if callable(value) and not isinstance(value, type):
        return  # a predicate
    types = cast("tuple[object, ...]", value if isinstance(value, tuple) else (value,))
    if not all(isinstance(t, type) and issubclass(t, Exception) for t in types):
        msg = (
            f"{attribute.name} must be an Exception subclass, a tuple of them, "
            f"a predicate taking an exception, or None, got {value!r}"
        )
        raise TypeError(msg)


def bool_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        msg = f"{attribute.name} must be True, False or None, got {value!r}"
        raise TypeError(msg)


def rng(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, random.Random):
        msg = f"{attribute.name} must be a random.Random or None, got {value!r}"
        raise TypeError(msg)
