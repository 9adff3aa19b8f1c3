"""A concurrency limit learned from latency: :class:`Adaptive` and its state.

Pure: :class:`AdaptiveLimit` is told, for each call that held a place, when
it ended, how long it held the place and whether it was dropped; it never
reads a clock. The algorithm, in short (the explanation has its reasons):

- Once per round trip the round trip's average latency ``r`` is compared
  with the dependency's unloaded latency ``base``. A round trip counts the
  calls placed after it began (those placed before tell of an older limit)
  and ends after at least 10 of them, or half the calls in flight if more.
  Below ``1 + 0.4 * (tolerance - 1)`` times ``base``, nothing queues inside
  the dependency: the limit grows by its square root (if it was in use).
  Above ``tolerance`` times it, calls queue there: the limit goes halfway to
  what would bring the latency back to ``1 + 0.7 * (tolerance - 1)`` times
  ``base`` (Little's law); halfway, as one round trip's latency is noisy.
- The unloaded latency is measured, not assumed: on the second round trip
  and every ``probe_interval`` seconds the limit halves for a round trip,
  and halves again while that cuts the latency nearly in half too (calls
  still queued); the last step's average latency is ``base``. A round trip
  of at least 20 calls with a lower average lowers it at once (the
  dependency sped up); five round trips in a row that lowered the limit
  without lowering the latency measure it again (it slowed down).
- Dropped calls (timeouts, counted failures) give no latency; a round trip
  with a share ``d`` of them cuts the limit by ``d / 2`` (all dropped:
  halved).
"""

from __future__ import annotations

import math
import random
from typing import Any, final

import attrs

# The fewest calls a round trip, or a step of a probe, averages.
_CALLS = 10
# A round trip over at least this many calls may lower the unloaded latency
# between probes (fewer would be too noisy a minimum).
_WINDOW_CALLS = 20
# A probe's step that halved the limit and answered this much faster than
# the round trip before it: calls queued, and may still.
_STILL_QUEUED = 0.9
# Lowering the limit to half kept at least this share of the latency: in
# vain, the dependency is slower than measured.
_IN_VAIN = 0.75


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
            (the limit halves for a round trip or a few); > 0.

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
        "_before",
        "_drops",
        "_left",
        "_limit",
        "_lower",
        "_max_in_flight",
        "_next_probe",
        "_probing",
        "_raise_below",
        "_restore",
        "_spec",
        "_stale",
        "_streak",
        "_sum",
        "_target",
        "_times",
        "_uniform",
        "_window_start",
        "current",
        "round_trips",
    )

    def __init__(self, spec: Adaptive, rng: random.Random | None = None) -> None:
        self._spec = spec
        # Jitter only: the random module's generator unless given one.
        self._uniform = random.uniform if rng is None else rng.uniform
        self._limit = float(spec.initial)
        self.current = spec.initial
        self.round_trips = 0  # judged so far, a probe's steps included
        slack = spec.tolerance - 1
        self._raise_below = 1 + 0.4 * slack
        self._lower = spec.tolerance
        self._target = 1 + 0.7 * slack
        # The unloaded latency, once a probe has measured it.
        self._base: float = math.inf
        # A probe under way, and the limit to restore after it.
        self._probing = False
        self._restore = 0.0
        self._next_probe = -math.inf  # the second round trip ends in a probe
        # The latency sum and count of the last round trip (or probe step).
        self._before = (0.0, 0)
        # Round trips in a row that lowered the limit: the limit and latency
        # of the first; stale, if that did not help (the dependency slowed).
        self._streak: tuple[float, float] | None = None
        self._stale = False
        # The current round trip (or step of a probe): when it began, the
        # latency sum and count of the calls placed since that were
        # answered, the calls dropped, the most calls in flight.
        self._window_start = -math.inf
        self._sum = 0.0
        self._times = 0
        self._drops = 0
        self._max_in_flight = 0
        self._left = _CALLS  # calls until this round trip may end

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
        if dropped:
            if self._probing:
                return  # a probe measures answers only
            # However long ago it was placed: a timeout takes that long.
            self._drops += 1
        elif now - latency >= self._window_start:
            self._sum += latency
            self._times += 1
        else:
            return  # placed under an earlier limit: it tells of that one
        if in_flight > self._max_in_flight:  # noqa: PLR1730 - hot: max() costs more
            self._max_in_flight = in_flight
        self._left -= 1
        if not self._left:
            self._window_ended(now, in_flight)

    def _window_ended(self, now: float, in_flight: int) -> None:
        self.round_trips += 1
        total, times = self._sum, self._times
        if self._probing:
            self._probed(now, total, times)
        elif self._window_start == -math.inf:
            pass  # the first round trip: some of its calls found no queue
        elif now >= self._next_probe or self._stale:
            # Measure the unloaded latency: half the limit, and less while
            # that makes calls faster.
            self._probing = True
            self._restore = self._limit
            self._set(self._limit / 2)
        else:
            self._adjust(total, times)
        self._before = (total, times)
        self._window_start = now
        self._sum = 0.0
        self._times = self._drops = self._max_in_flight = 0
        # Half of the calls that the places now held see through: about
        # those placed in the next half round trip, then answered.
        self._left = max(_CALLS, min(in_flight, self.current) // 2)

    def _probed(self, now: float, total: float, times: int) -> None:
        before_total, before_times = self._before
        before = before_total / before_times if before_times else math.inf
        faster = total / times < _STILL_QUEUED * before
        if faster and self._limit > self._spec.minimum:
            # Fewer calls, answered faster: some queued, and may still. A
            # third fewer again: enough to tell, cheaper than half.
            self._set(self._limit * 2 / 3)
            return
        if faster:
            self._base = total / times  # the fewest calls: all there is
        else:
            # No faster than the round trip before: neither queued, both
            # measure it (a loaded client's own delays, in both, cancel).
            self._base = (total + before_total) / (times + before_times)
        self._probing = self._stale = False
        self._streak = None
        self._set(self._restore)
        interval = self._spec.probe_interval
        # Jittered, so that many limits do not probe in step.
        self._next_probe = now + interval * self._uniform(0.85, 1.15)

    def _adjust(self, total: float, times: int) -> None:
        limit = new = self._limit
        if times:
            latency = total / times
            if times >= _WINDOW_CALLS and latency < self._base:
                self._base = latency  # faster than measured: it sped up
            ratio = latency / self._base
            if ratio > self._lower:
                # Little's law: at the same throughput, target / ratio of the
                # calls would answer in target * base. Halfway there, since
                # one round trip's latency is noisy (a loaded client's own
                # delays look like queueing); the next round trip goes on.
                new = min(limit - 1, limit * (1 + self._target / ratio) / 2)
                streak = self._streak
                if streak is None:
                    self._streak = (limit, latency)
                elif (
                    limit <= max(streak[0] / 2, self._spec.minimum)
                    and latency >= _IN_VAIN * streak[1]
                ):
                    # Half the calls (or the fewest), the same latency: the
                    # dependency itself is slower. Measure it again.
                    self._stale = True
            else:
                self._streak = None
                if ratio < self._raise_below and 2 * self._max_in_flight >= limit:
                    new = limit + max(1.0, math.sqrt(limit))
        drops = self._drops
        if drops:
            new *= 1 - drops / (drops + times) / 2
        self._set(new)

    def _set(self, limit: float) -> None:
        spec = self._spec
        self._limit = min(float(spec.maximum), max(float(spec.minimum), limit))
        self.current = int(self._limit)
