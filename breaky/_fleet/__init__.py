"""The Redis/Valkey fleet (``breaky[redis]``), behind :mod:`breaky.redis`.

Talks to breakers only through the core's fleet seam
(:mod:`breaky._core.fleet`). The core never imports this room.
"""
