"""What the failure rule remembers: failures counted, or outcomes in a window.

:class:`Failures` is the rule the machine asks: the count rule (failures
since the breaker turned ON, in a row, or in the last ``failure_window``
seconds) or the rate rule (the share of failed outcomes in the window, kept
in slices by :class:`Outcomes`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from breaky._core.policy import Policy

# The failure-rate rule keeps its outcomes in this many slices of the window:
# memory stays constant whatever the call rate, and each outcome counts for
# at least (1 - 1/SLICES) of the window.
SLICES = 20


@final
@attrs.define
class Outcomes:
    """The outcomes of the last ``window`` seconds, in slices (the rate rule)."""

    window: float
    # (slice number, outcomes, failures), oldest first.
    _slices: deque[list[int]] = attrs.field(init=False, factory=deque[list[int]])
    calls: int = attrs.field(init=False, default=0)
    failures: int = attrs.field(init=False, default=0)

    def add(self, now: float, *, failed: bool) -> None:
        """Count one outcome at ``now``."""
        self.forget(now)
        number = math.floor(now * SLICES / self.window)
        slices = self._slices
        if not slices or slices[-1][0] != number:
            slices.append([number, 0, 0])
        last = slices[-1]
        last[1] += 1
        self.calls += 1
        if failed:
            last[2] += 1
            self.failures += 1

    def forget(self, now: float) -> None:
        """Drop the slices that have left the window at ``now``."""
        slices = self._slices
        # A slice leaves once its start is a whole window ago.
        first_kept = math.floor(now * SLICES / self.window) - SLICES + 1
        while slices and slices[0][0] < first_kept:
            _, calls, failures = slices.popleft()
            self.calls -= calls
            self.failures -= failures

    def amend(self, now: float) -> bool:
        """Turn the latest success in the window into a failure, if any."""
        self.forget(now)
        for part in reversed(self._slices):  # [number, calls, failures]
            if part[1] > part[2]:
                part[2] += 1
                self.failures += 1
                return True
        return False

    def rebase(self, now: float) -> None:
        """Keep every outcome counted, as if it happened at ``now``."""
        calls, failures = self.calls, self.failures
        self.clear()
        if calls:
            self._slices.append(
                [math.floor(now * SLICES / self.window), calls, failures]
            )
            self.calls, self.failures = calls, failures

    def failures_at(self, now: float) -> int:
        """The failures still in the window at ``now`` (changes nothing)."""
        first_kept = math.floor(now * SLICES / self.window) - SLICES + 1
        return sum(s[2] for s in self._slices if s[0] >= first_kept)

    def clear(self) -> None:
        """Forget every outcome."""
        self._slices.clear()
        self.calls = self.failures = 0


@final
class Failures:
    """The failure rule of one breaker: whether its failures trip it."""

    __slots__ = ("_in_a_row", "_outcomes", "_policy", "_times")

    def __init__(self, policy: Policy, *, in_a_row: bool) -> None:
        self._policy = policy
        # The count rule: when each counted failure happened, oldest first.
        self._times: deque[float] = deque()
        # A success resets the count (only with no window and no rate: they
        # keep their meaning).
        self._in_a_row = in_a_row and policy.failure_window is None
        # The rate rule, when the policy has a failure_rate.
        self._outcomes: Outcomes | None = None
        if policy.failure_rate is not None:
            assert policy.failure_window is not None  # noqa: S101 - validated
            self._outcomes = Outcomes(policy.failure_window)

    @property
    def count(self) -> int:
        """The failures counted, as of the last input."""
        if self._outcomes is not None:
            return self._outcomes.failures
        return len(self._times)

    @property
    def wants_successes(self) -> bool:
        """Whether a success changes anything (the rate rule; failures in a row)."""
        return self._outcomes is not None or (self._in_a_row and bool(self._times))

    def at(self, now: float) -> int:
        """The failures that count at ``now``: a query, it changes nothing."""
        if self._outcomes is not None:
            return self._outcomes.failures_at(now)
        window = self._policy.failure_window
        if window is None:
            return len(self._times)
        return sum(1 for t in self._times if t > now - window)

    def failed(self, now: float) -> bool:
        """Count one failure at ``now``; whether the breaker trips."""
        outcomes = self._outcomes
        if outcomes is not None:
            outcomes.add(now, failed=True)
            return self._rate_reached()
        times = self._times
        times.append(now)
        window = self._policy.failure_window
        if window is not None:
            while times[0] <= now - window:
                times.popleft()
        return len(times) >= self._policy.failure_threshold

    def amended(self, now: float) -> bool | None:
        """The rate rule: the latest success becomes a failure; whether it trips.

        ``None`` when there is no success to amend (the count rule, or none in
        the window): then it is a failure of its own.
        """
        outcomes = self._outcomes
        if outcomes is None or not outcomes.amend(now):
            return None
        return self._rate_reached()

    def succeeded(self, now: float) -> None:
        """A success: counted by the rate rule, a reset of failures in a row."""
        if self._outcomes is not None:
            self._outcomes.add(now, failed=False)
        elif self._in_a_row:
            self._times.clear()

    def clear(self) -> None:
        """Forget everything (the breaker turned ON, or was reset)."""
        self._times.clear()
        if self._outcomes is not None:
            self._outcomes.clear()

    def rebase(self, now: float) -> None:
        """Keep every failure counted, as if it happened at ``now``."""
        self._times = deque([now] * len(self._times))
        if self._outcomes is not None:
            self._outcomes.rebase(now)

    def _rate_reached(self) -> bool:
        outcomes = self._outcomes
        rate = self._policy.failure_rate
        assert outcomes is not None  # noqa: S101 - the rate rule
        assert rate is not None  # noqa: S101
        # A division, not failures >= rate * calls: 0.28 * 25 is 7.000000000000001.
        return (
            outcomes.calls >= self._policy.minimum_calls
            and outcomes.failures / outcomes.calls >= rate
        )
