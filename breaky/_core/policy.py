"""What a breaker is allowed to do, validated once, before anything starts."""

from __future__ import annotations

import difflib
import enum
from typing import TYPE_CHECKING, TypeAlias, final

import attrs

from . import attempt_options, checks

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from typing_extensions import TypedDict

    from .adaptive import Adaptive


FailureExceptions: TypeAlias = (
    "type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] | None"
)

# A start that has not called task_status.started() after this long is a
# failed start. Long enough for a connect, a TLS handshake and a health check
# over a slow network; short enough that a service whose dependency hangs
# settles OFF (after failure_threshold attempts) instead of hanging with it.
DEFAULT_START_TIMEOUT = 10.0


@final
@attrs.frozen
class Policy:
    """Every option of a circuit breaker, checked when it is made.

    A policy can be shared by many breakers, of either kind: pass one as
    ``policy=`` to :meth:`breaky.Supervisor.start_circuit_breaker`,
    :meth:`breaky.Supervisor.guard` or :class:`breaky.Guard`, where keyword
    options (any field's name) override its fields. The defaults are the
    Erlang seed's. A field that means nothing for one kind (``start_timeout``
    for a guard; ``trial_calls`` and ``max_concurrent`` for a resource
    breaker) is refused there unless it keeps its default.

    Attributes:
        failure_threshold: failures that turn the breaker OFF; an int >= 1
            (the count rule; unused when ``failure_rate`` is set).
        retry_timeout: seconds from a trip to the first attempt while OFF (a
            start, or a guard's trial call), and between attempts when
            ``retry_backoff`` is 1; > 0.
        call_timeout: default seconds a call waits for its answer; ``None``
            waits as long as the caller's own cancel scopes allow.
        failure_window: when set, only failures in the last ``failure_window``
            seconds count toward the threshold (OTP's intensity and period);
            ``None`` counts failures since the breaker last turned ON (or, with
            ``failures_in_a_row``, since the last success).
        retry_backoff: each failed attempt while OFF multiplies the wait by
            this; >= 1. The wait goes back to ``retry_timeout`` once an
            attempt succeeds.
        max_retry_timeout: the longest wait between attempts; ``None`` for no
            cap; >= ``retry_timeout``.
        retry_jitter: spreads each wait uniformly over +/- this fraction of it
            (0.1 is +/-10%), so a fleet of breakers does not retry in lockstep;
            >= 0 and < 1.
        failure_exceptions: the exceptions that count one failure (passed to
            ``request.fail()``, or raised by a guarded call): an exception
            type, a tuple of them, or a predicate. ``None`` (the default)
            means the kind's default: for a resource breaker none count (the
            caller decides, with :meth:`~breaky.CircuitBreaker.failure`); for
            a guard every ``Exception`` counts. An exception that does not
            count is still the caller's answer, and a success.
        slow_call_duration: a call answered later than this many seconds counts
            one failure (the reply is still delivered); ``None`` to disable.
        rng: the random source of the jitter; pass ``random.Random(seed)`` to
            make it repeatable. By default each breaker has its own.
        max_queued: load shedding. When this many requests (calls and casts)
            wait in the inbox, not yet taken by the resource (for a guard:
            calls wait for one of ``max_concurrent`` places), a new one is
            answered :data:`~breaky.OFF` at once and never reaches the
            resource; a shed call is not a failure and changes no state.
            ``None`` (the default) queues without limit; an int >= 1.
        start_timeout: seconds a start (the first, a restart or a retry) may
            take to call ``task_status.started()``; a start still pending then
            is cancelled and counts as a failed start. 10 by default (long
            enough for a connect, a TLS handshake and a health check; short
            enough that a hung dependency turns the breaker OFF rather than
            hanging the service); ``None`` waits as long as it takes; > 0.
        trial_calls: a guard's half-open rule: once the retry wait has
            passed, this many trial calls, one at a time, must succeed before
            the guard is ON again; every other call meanwhile is answered
            OFF. An int >= 1.
        max_concurrent: a guard's bulkhead: at most this many calls run at
            once; with ``max_queued``, that many more wait for a place (in
            order, within their timeout), and beyond it a call is shed.
            An int >= 1, a :class:`~breaky.Adaptive` limit (learned from the
            calls' latency: each guard, each key of a keyed guard, learns its
            own), or ``None`` (the default): no limit.
        failure_rate: the rate rule, which replaces the count rule when set:
            the breaker trips when, within the last ``failure_window`` seconds
            (required with it), at least ``minimum_calls`` calls had an
            outcome and this share of them failed. A success is a reply
            (resource breaker) or a return (guard). > 0 and <= 1, or ``None``.
            Outcomes are kept in twentieths of the window, so each counts for
            between 95% and 100% of it.
        minimum_calls: the fewest outcomes in the window for the rate rule
            to trip; an int >= 1.
        failures_in_a_row: with the count rule and no ``failure_window``,
            whether a success resets the count, so that only
            ``failure_threshold`` failures in a row trip the breaker (as
            pybreaker, aiobreaker, circuitbreaker and Polly's consecutive
            breaker count). ``None`` (the default) means the kind's default:
            ``True`` for a guard; ``False`` for a resource breaker, whose
            crashes and failed starts count until it is ON again (the seed's
            rule).
        attempts: a guard's most runs of its function for one call, hedges
            included; an int >= 1. Each attempt is a call through the guard
            (counted, judged, under its own ``call_timeout``); none is added
            while the guard is not ON (see the how-to on attempts).
        attempt_on: which exceptions are worth another attempt: a type, a
            tuple of them, or a predicate; ``None``: those that count as a
            failure, and a :exc:`~breaky.CallTimeout` of one attempt.
        attempt_wait: seconds before the second attempt, doubled for each
            later one, capped at ``max_attempt_wait``; each wait is drawn
            between half and all of that (from ``rng``). >= 0.
        max_attempt_wait: the longest such wait; >= ``attempt_wait``.
        attempt_budget: over any 10 s, a guard's (a keyed group's) extra
            attempts are at most this share of its calls' first attempts,
            plus ``attempt_budget_min`` per second; 0 to 1. 0.2: even when
            every call fails, the dependency sees at most 1.2 times the calls.
        attempt_budget_min: extra attempts per second always allowed, so that
            a quiet guard can still re-attempt a rare failure; >= 0.
        hedge_after: while no attempt has answered and fewer than
            ``attempts`` have started, another starts every this many seconds;
            the first success answers. ``None``: no hedging; > 0.

    """

    failure_threshold: int = attrs.field(default=10, validator=checks.threshold)
    retry_timeout: float = attrs.field(default=10.0, validator=checks.positive)
    call_timeout: float | None = attrs.field(
        default=5.0, validator=checks.positive_or_none
    )
    failure_window: float | None = attrs.field(
        default=None, validator=checks.positive_or_none
    )
    retry_backoff: float = attrs.field(default=1.0, validator=checks.backoff)
    max_retry_timeout: float | None = attrs.field(
        default=None, validator=checks.positive_or_none
    )
    retry_jitter: float = attrs.field(default=0.0, validator=checks.jitter)
    failure_exceptions: FailureExceptions = attrs.field(
        default=None, validator=checks.exceptions
    )
    slow_call_duration: float | None = attrs.field(
        default=None, validator=checks.positive_or_none
    )
    rng: random.Random | None = attrs.field(
        default=None, eq=False, validator=checks.rng
    )
    max_queued: int | None = attrs.field(default=None, validator=checks.count_or_none)
    start_timeout: float | None = attrs.field(
        default=DEFAULT_START_TIMEOUT, validator=checks.positive_or_none
    )
    trial_calls: int = attrs.field(default=1, validator=checks.threshold)
    max_concurrent: int | Adaptive | None = attrs.field(
        default=None, validator=checks.limit_or_none
    )
    failure_rate: float | None = attrs.field(default=None, validator=checks.rate)
    minimum_calls: int = attrs.field(default=10, validator=checks.threshold)
    failures_in_a_row: bool | None = attrs.field(
        default=None, validator=checks.bool_or_none
    )

    attempts: int = attrs.field(default=1, validator=checks.threshold)
    attempt_on: FailureExceptions = attrs.field(
        default=None, validator=checks.exceptions
    )
    attempt_wait: float = attrs.field(default=0.05, validator=attempt_options.wait)
    max_attempt_wait: float = attrs.field(default=1.0, validator=attempt_options.wait)
    attempt_budget: float = attrs.field(default=0.2, validator=attempt_options.share)
    attempt_budget_min: float = attrs.field(
        default=1.0, validator=attempt_options.per_second
    )
    hedge_after: float | None = attrs.field(
        default=None, validator=checks.positive_or_none
    )

    def __new__(cls, *_: object, **options: object) -> Policy:
        # Before attrs' __init__: a misspelt option is named with the list of
        # fields, as a breaker's is, rather than by Python's generic message.
        refuse_unknown(options)
        return super().__new__(cls)

    def __attrs_post_init__(self) -> None:
        cap = self.max_retry_timeout
        if cap is not None and cap < self.retry_timeout:
            msg = (
                f"max_retry_timeout must be >= retry_timeout ({self.retry_timeout!r}),"
                f" got {cap!r}"
            )
            raise ValueError(msg)
        if self.failure_rate is not None and self.failure_window is None:
            msg = (
                "failure_rate needs a failure_window (the seconds its share of "
                "failures is measured over), got failure_window=None"
            )
            raise ValueError(msg)
        attempt_options.check_together(
            self.attempts, self.attempt_wait, self.max_attempt_wait, self.hedge_after
        )


def refuse_unknown(options: dict[str, object], hint: str = "") -> None:
    """Refuse an option that is no field of Policy, listing the fields.

    The message ends with ``hint``; a near miss is named (``retry_time``:
    did you mean ``retry_timeout``?).
    """
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        near = difflib.get_close_matches(unknown[0], _FIELDS, n=1)
        guess = f" (did you mean {near[0]!r}?)" if near else ""
        msg = (
            f"unexpected option {unknown[0]!r}{guess}: the options are the fields "
            f"of breaky.Policy ({', '.join(_FIELDS)}){hint}"
        )
        raise TypeError(msg)


_FIELDS = tuple(f.name for f in attrs.fields(Policy))


if TYPE_CHECKING:

    class PolicyOptions(TypedDict, total=False):
        """Every field of :class:`Policy`, as keyword options (for type checkers)."""

        failure_threshold: int
        retry_timeout: float
        call_timeout: float | None
        failure_window: float | None
        retry_backoff: float
        max_retry_timeout: float | None
        retry_jitter: float
        failure_exceptions: FailureExceptions
        slow_call_duration: float | None
        rng: random.Random | None
        max_queued: int | None
        start_timeout: float | None
        trial_calls: int
        max_concurrent: int | Adaptive | None
        failure_rate: float | None
        minimum_calls: int
        failures_in_a_row: bool | None
        attempts: int
        attempt_on: FailureExceptions
        attempt_wait: float
        max_attempt_wait: float
        attempt_budget: float
        attempt_budget_min: float
        hedge_after: float | None


class FromPolicy(enum.Enum):
    """The default of options that, when not given, come from the policy."""

    FROM_POLICY = "from the policy"

    def __repr__(self) -> str:
        return f"<{self.value}>"


FROM_POLICY = FromPolicy.FROM_POLICY


class Kind(enum.Enum):
    """The two kinds of breaker, as a policy's checks name them."""

    RESOURCE = "a resource breaker"
    GUARD = "a guard"


# The fields that mean nothing for one kind, and what to use instead.
_MEANINGLESS: dict[Kind, dict[str, str]] = {
    Kind.GUARD: {
        "start_timeout": "a guard starts nothing; bound each call with call_timeout",
    },
    Kind.RESOURCE: {
        "trial_calls": "a resource breaker's trial is its start (with its health "
        "check); a guard has trial calls",
        "max_concurrent": "a resource serves as many requests at once as it takes "
        "from its inbox; use inbox.serve(handler, concurrency=N)",
        **dict.fromkeys(attempt_options.NAMES, attempt_options.FOR_A_RESOURCE),
    },
}
_DEFAULTS = Policy()


def policy_for(
    kind: Kind, policy: object, options: dict[str, object], *, hint: str = ""
) -> Policy:
    """``policy`` (or the default) with ``options`` applied, checked for ``kind``.

    Raises ``TypeError`` for an option that is no field of Policy (its
    message ends with ``hint``), and ``ValueError`` for a field that means
    nothing for ``kind``.
    """
    if policy is None:
        policy = _DEFAULTS
    elif not isinstance(policy, Policy):
        msg = f"policy must be a breaky.Policy or None, got {policy!r}"
        raise TypeError(msg)
    refuse_unknown(options, hint)
    if options:
        policy = attrs.evolve(policy, **options)  # type: ignore[arg-type]
    for name, instead in _MEANINGLESS[kind].items():
        if getattr(policy, name) != getattr(_DEFAULTS, name):
            msg = (
                f"{name} means nothing for {kind.value}: {instead} "
                f"(got {name}={getattr(policy, name)!r})"
            )
            raise ValueError(msg)
    if (
        kind is Kind.GUARD
        and policy.max_queued is not None
        and (policy.max_concurrent is None)
    ):
        msg = (
            "max_queued needs max_concurrent for a guard: calls wait only for "
            f"one of max_concurrent places (got max_queued={policy.max_queued!r}, "
            "max_concurrent=None)"
        )
        raise ValueError(msg)
    return policy
