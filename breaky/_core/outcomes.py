"""The failure-rate rule's memory: outcomes in slices of a sliding window."""

from __future__ import annotations

import math
from collections import deque
from typing import final

import attrs

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
