"""What a breaker is allowed to do, validated once, before anything starts."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, TypeAlias, cast, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable


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


def _count_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be an int >= 1 or None, got {value!r}"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(msg)
    if value < 1:
        raise ValueError(msg)


def _backoff(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be a finite number >= 1.0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(msg)


def _jitter(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"{attribute.name} must be a number >= 0.0 and < 1.0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not 0 <= value < 1:  # NaN fails this too
        raise ValueError(msg)


def _exceptions(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if callable(value) and not isinstance(value, type):
        return  # a predicate
    types = cast("tuple[object, ...]", value if isinstance(value, tuple) else (value,))
    if not all(isinstance(t, type) and issubclass(t, Exception) for t in types):
        msg = (
            f"{attribute.name} must be an Exception subclass, a tuple of them, "
            f"or a predicate taking an exception, got {value!r}"
        )
        raise TypeError(msg)


def _rng(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, random.Random):
        msg = f"{attribute.name} must be a random.Random or None, got {value!r}"
        raise TypeError(msg)


FailureExceptions: TypeAlias = (
    "type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]"
)


@final
@attrs.frozen
class Policy:
    """Every option of a circuit breaker, checked when it is made.

    A policy can be shared by many breakers; pass one to
    :meth:`breaky.Supervisor.start_circuit_breaker` as ``policy=``, where
    keyword options override its fields. The defaults are the Erlang seed's.

    Attributes:
        failure_threshold: failures that turn the breaker OFF; an int >= 1.
        retry_timeout: seconds from a trip to the first start attempt while
            OFF, and between attempts when ``retry_backoff`` is 1; > 0.
        call_timeout: default seconds a call waits for its answer; ``None``
            waits as long as the caller's own cancel scopes allow.
        failure_window: when set, only failures in the last ``failure_window``
            seconds count toward the threshold (OTP's intensity and period);
            ``None`` counts every failure since the breaker last turned ON.
        retry_backoff: each failed attempt while OFF multiplies the wait by
            this; >= 1. The wait goes back to ``retry_timeout`` once an
            attempt succeeds.
        max_retry_timeout: the longest wait between attempts; ``None`` for no
            cap; >= ``retry_timeout``.
        retry_jitter: spreads each wait uniformly over +/- this fraction of it
            (0.1 is +/-10%), so a fleet of breakers does not retry in lockstep;
            >= 0 and < 1.
        failure_exceptions: exceptions that, passed to ``request.fail()``,
            count one failure: an exception type, a tuple of them, or a
            predicate. By default none count: the caller decides, with
            :meth:`~breaky.CircuitBreaker.failure`.
        slow_call_duration: a call answered later than this many seconds counts
            one failure (the reply is still delivered); ``None`` to disable.
        rng: the random source of the jitter; pass ``random.Random(seed)`` to
            make it repeatable. By default each breaker has its own.
        max_queued: load shedding. When this many requests (calls and casts)
            wait in the inbox, not yet taken by the resource, a new one is
            answered :data:`~breaky.OFF` at once and never reaches the
            resource; a shed call is not a failure and changes no state.
            ``None`` (the default) queues without limit; an int >= 1.
        start_timeout: seconds a start (the first, a restart or a retry) may
            take to call ``task_status.started()``; a start still pending then
            is cancelled and counts as a failed start. ``None`` (the default)
            waits as long as it takes; > 0.

    """

    failure_threshold: int = attrs.field(default=10, validator=_threshold)
    retry_timeout: float = attrs.field(default=10.0, validator=_positive)
    call_timeout: float | None = attrs.field(default=5.0, validator=_positive_or_none)
    failure_window: float | None = attrs.field(
        default=None, validator=_positive_or_none
    )
    retry_backoff: float = attrs.field(default=1.0, validator=_backoff)
    max_retry_timeout: float | None = attrs.field(
        default=None, validator=_positive_or_none
    )
    retry_jitter: float = attrs.field(default=0.0, validator=_jitter)
    failure_exceptions: FailureExceptions = attrs.field(
        default=(), validator=_exceptions
    )
    slow_call_duration: float | None = attrs.field(
        default=None, validator=_positive_or_none
    )
    rng: random.Random | None = attrs.field(default=None, eq=False, validator=_rng)
    max_queued: int | None = attrs.field(default=None, validator=_count_or_none)
    start_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)

    def __attrs_post_init__(self) -> None:
        cap = self.max_retry_timeout
        if cap is not None and cap < self.retry_timeout:
            msg = (
                f"max_retry_timeout must be >= retry_timeout ({self.retry_timeout!r}),"
                f" got {cap!r}"
            )
            raise ValueError(msg)

    def counts_as_failure(self, error: Exception) -> bool:
        """Whether ``error``, passed to ``request.fail()``, counts one failure."""
        kinds = self.failure_exceptions
        if isinstance(kinds, tuple | type):
            return isinstance(error, kinds)
        return bool(kinds(error))
