"""A concurrency limit learned from latency: :class:`Adaptive` and its state.

Pure: :class:`AdaptiveLimit` is told, for each call that held a place, when
it ended, how long it held the place and whether it was dropped; it never
reads a clock. The algorithm, in short (the explanation has its reasons):

- Once per round trip (a window lasting the average latency of its calls,
  and at least 10 calls),
  the window's average latency ``r`` is compared with the dependency's
  unloaded latency ``base``. Below ``1 + 0.4 * (tolerance - 1)`` times it,
  nothing queues inside the dependency: the limit grows by its square root
  (if the limit was in use). Above ``tolerance`` times it, calls queue there:
  the limit shrinks to what would bring the latency back to ``1 + 0.7 *
  (tolerance - 1)`` times ``base`` (Little's law), at most halving.
- The unloaded latency is measured, not assumed: at first and every
  ``probe_interval`` seconds the limit drops to a quarter for a moment, then
  halves while that makes calls faster still (at least once): the average
  latency of the last step's 10 calls, placed after it began (so none queued
  behind earlier ones), is the new ``base``. A round trip with a lower
  average over enough calls lowers it at once (the dependency sped up).
- Dropped calls (timeouts, counted failures) give no latency; a window with
  a share ``d`` of them cuts the limit by ``d / 2`` (all dropped: halved).
"""

from __future__ import annotations

import math
import random
from typing import Any, TypeAlias, final

import attrs

# The fewest calls a round trip, or a step of a probe, averages.
_CALLS = 10
# A round trip over at least this many calls may lower the unloaded latency
# between probes (fewer would be too noisy a minimum).
_WINDOW_CALLS = 20
# A probe step this much faster than the one before: calls still queued.
_STILL_QUEUED = 0.9
# Round trips in a row that lowered the limit, after which the unloaded
# latency is measured again at once: lowering did not bring the latency
# down, so the dependency itself is slower than measured.
_STALE = 5


# A probe's step: when it began, the limit to restore, the average latency of
# the step before, this step's latency sum and calls.
_Probe: TypeAlias = "tuple[float, float, float, float, int]"


def _bound(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"Adaptive: {attribute.name} must be an int >= 1, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(msg)
    if value < 1:
        raise ValueError(msg)


def _tolerance(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = f"Adaptive: {attribute.name} must be a finite number > 1.0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not (math.isfinite(value) and value > 1):
        raise ValueError(msg)


def _interval(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    msg = (
        f"Adaptive: {attribute.name} must be a finite number of seconds > 0, "
        f"got {value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(msg)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(msg)


@final
@attrs.frozen(kw_only=True)
class Adaptive:
    """A concurrency limit that breaky learns from the dependency's latency.

    Pass it where a fixed limit goes: ``max_concurrent=`` of a guard (each
    guard, and each key of a keyed guard, learns its own) or
    ``concurrency=`` of :meth:`breaky.Inbox.serve`. It is a description,
    shared freely; the learning state belongs to what uses it.

    The limit follows the dependency's capacity: it grows while calls are
    answered about as fast as when the dependency is idle, and shrinks once
    they queue inside it (their latency passes ``tolerance`` times its
    unloaded latency) or are dropped (timeouts, counted failures). Latency is
    measured from when a call got its place to its answer: waiting in
    breaky's line is not the dependency's time.

    Attributes:
        initial: the limit to start with; an int in ``[minimum, maximum]``.
        minimum: the limit never goes below this; an int >= 1.
        maximum: the limit never goes above this; an int >= ``minimum``.
        tolerance: how much slower than unloaded the dependency may answer
            before the limit shrinks: 1.5 lets a round trip's average latency
            reach 1.5 times the unloaded latency; a number > 1.
        probe_interval: seconds between measurements of the unloaded latency
            (the limit drops to a quarter for a few round trips); > 0.

    Raises:
        TypeError, ValueError: a bound that is not an int, below 1, or out of
            order, or a bad ``tolerance`` or ``probe_interval``; the message
            names it.

    """

    initial: int = attrs.field(validator=_bound)
    minimum: int = attrs.field(default=1, validator=_bound)
    maximum: int = attrs.field(default=1000, validator=_bound)
    tolerance: float = attrs.field(default=1.5, validator=_tolerance)
    probe_interval: float = attrs.field(default=30.0, validator=_interval)

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.minimum:
            msg = (
                f"Adaptive: maximum must be >= minimum ({self.minimum}), "
                f"got {self.maximum}"
            )
            raise ValueError(msg)
        if not self.minimum <= self.initial <= self.maximum:
            msg = (
                f"Adaptive: initial must be within [minimum, maximum] "
                f"([{self.minimum}, {self.maximum}]), got {self.initial}"
            )
            raise ValueError(msg)

    def start(self, rng: random.Random | None = None) -> AdaptiveLimit:
        """A new limit, learning from scratch (``rng`` jitters its probes)."""
        return AdaptiveLimit(self, rng)


@final
class AdaptiveLimit:
    """The learning state of one :class:`Adaptive` limit (one guard, one key).

    :attr:`current` is the limit now; :meth:`sample` is told of each call
    that held a place, and may change it.
    """

    __slots__ = (
        "_base",
        "_drops",
        "_limit",
        "_lower",
        "_lowered",
        "_max_in_flight",
        "_next_probe",
        "_probe",
        "_raise_below",
        "_rng",
        "_spec",
        "_sum",
        "_target",
        "_times",
        "_window_start",
        "current",
    )

    def __init__(self, spec: Adaptive, rng: random.Random | None = None) -> None:
        self._spec = spec
        self._rng = random.Random() if rng is None else rng  # noqa: S311 - jitter
        self._limit = float(spec.initial)
        self.current = spec.initial
        slack = spec.tolerance - 1
        self._raise_below = 1 + 0.4 * slack
        self._lower = spec.tolerance
        self._target = 1 + 0.7 * slack
        # The unloaded latency, once a probe has measured it.
        self._base: float = math.inf
        # A probe under way: (when its step began, the limit to restore, the
        # average latency of the step before, this step's latency sum, calls).
        self._probe: _Probe | None = None
        self._lowered = 0  # round trips in a row that lowered the limit
        self._next_probe = -math.inf  # the first round trip ends in a probe
        # The current round trip: when it began, its answered calls' latency
        # sum and count, its dropped calls, the most calls in flight.
        self._window_start: float | None = None
        self._sum = 0.0
        self._times = 0
        self._drops = 0
        self._max_in_flight = 0

    def __repr__(self) -> str:
        base = "unmeasured" if self._base == math.inf else f"{self._base:.3g} s"
        return f"<AdaptiveLimit {self.current} (unloaded latency {base})>"

    @property
    def unloaded_latency(self) -> float | None:
        """The dependency's latency when nothing queues in it, once measured."""
        return None if self._base == math.inf else self._base

    def sample(
        self, now: float, latency: float, in_flight: int, *, dropped: bool
    ) -> None:
        """A call that held a place for ``latency`` seconds ended at ``now``.

        ``in_flight`` is how many held a place then, this one included;
        ``dropped`` that it timed out or failed in a way that counts.
        """
        probe = self._probe
        if probe is not None:
            self._probed(probe, now, latency, dropped=dropped)
            return
        if self._window_start is None:
            self._window_start = now - latency
        self._max_in_flight = max(self._max_in_flight, in_flight)
        if dropped:
            self._drops += 1
        else:
            self._sum += latency
            self._times += 1
        # A window lasts one round trip (the average latency of its calls),
        # and enough calls that one lucky or unlucky call decides nothing.
        span = self._sum / self._times if self._times else latency
        if now - self._window_start < span or self._times + self._drops < _CALLS:
            return
        if now >= self._next_probe or self._lowered >= _STALE:
            # Measure the unloaded latency, from a quarter of the limit down.
            # No step before the first: it always halves once more.
            self._probe = (now, self._limit, math.inf, 0.0, 0)
            self._set(self._limit / 4)
        else:
            self._adjust()
        self._new_window(now)

    def _probed(
        self, probe: _Probe, now: float, latency: float, *, dropped: bool
    ) -> None:
        began, restore, before, total, calls = probe
        if dropped or now - latency < began:
            return  # placed before this step of the probe: it may have queued
        total, calls = total + latency, calls + 1
        if calls < _CALLS:
            self._probe = (began, restore, before, total, calls)
            return
        average = total / calls
        if average < _STILL_QUEUED * before and self._limit > self._spec.minimum:
            # Fewer calls, faster answers: some still queued. Halve again.
            self._probe = (now, restore, average, 0.0, 0)
            self._set(self._limit / 2)
            return
        self._base = average
        self._probe = None
        self._lowered = 0
        self._set(restore)
        interval = self._spec.probe_interval
        # Jittered, so that many limits do not probe in step.
        self._next_probe = now + interval * self._rng.uniform(0.85, 1.15)
        self._new_window(now)

    def _adjust(self) -> None:
        limit = new = self._limit
        if self._times:
            latency = self._sum / self._times
            if self._times >= _WINDOW_CALLS and latency < self._base:
                self._base = latency  # faster than measured: it sped up
            ratio = latency / self._base
            if ratio > self._lower:
                # Little's law: at the same throughput, the calls that would
                # answer in target * base, and never less than half at once.
                new = max(limit / 2, min(limit - 1, limit * self._target / ratio))
                self._lowered += 1
            elif ratio < self._raise_below and 2 * self._max_in_flight >= limit:
                new = limit + max(1.0, math.sqrt(limit))
        if new >= limit:
            self._lowered = 0
        if self._drops:
            new *= 1 - self._drops / (self._drops + self._times) / 2
        self._set(new)

    def _set(self, limit: float) -> None:
        spec = self._spec
        self._limit = min(float(spec.maximum), max(float(spec.minimum), limit))
        self.current = int(self._limit)

    def _new_window(self, now: float) -> None:
        self._window_start = now
        self._sum = 0.0
        self._times = self._drops = self._max_in_flight = 0
