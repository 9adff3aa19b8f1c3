"""The core: what decides, for every kind of breaker.

The pure state machine (:mod:`.machine`, :mod:`.outcomes`), the policy and
what counts as a failure (:mod:`.policy`), the per-breaker :class:`~.core.Core`
that admits calls and counts their outcomes (:mod:`.core`), its line of calls
waiting for a place (:mod:`.places`), statistics, events, errors, the ``OFF``
sentinel, and the seam a fleet talks through (:mod:`.fleet`). Nothing here
imports another room of breaky.
"""
