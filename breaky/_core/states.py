"""The states of a breaker, and what a fleet says of one: shared words."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """The state of a circuit breaker.

    - ``STARTING``: a resource breaker's first start has not settled; calls
      are queued for it (and answered OFF if every attempt fails).
    - ``ON``: calls go through (a resource may be restarting after a crash:
      calls are queued for it).
    - ``OFF``: too many failures; calls are answered :data:`breaky.OFF` at
      once, and attempts (a start, a trial call) are made at the policy's
      retry rate until one succeeds.
    - ``FORCED_OFF``: turned OFF by ``force_off()``; calls are answered OFF
      and nothing is tried until ``reset()``.
    - ``STOPPED``: the breaker was stopped; calls are answered OFF.
    """

    STARTING = "starting"
    ON = "on"
    OFF = "off"
    FORCED_OFF = "forced off"
    STOPPED = "stopped"


class Hold(enum.Enum):
    """What a fleet says of this instance's breaker (see :mod:`breaky._core.fleet`).

    - ``NONE``: no fleet holds it; the local rules alone apply.
    - ``HELD``: the fleet holds it OFF and another instance probes: no timer,
      no attempt.
    - ``PROBER``: the fleet holds it OFF and this instance probes, at the
      policy's retry rate.
    """

    NONE = "none"
    HELD = "held"
    PROBER = "prober"
