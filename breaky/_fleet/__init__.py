"""The Redis/Valkey fleet (``breaky[redis]``), behind :mod:`breaky.redis`.

- :mod:`.redis`: :class:`RedisFleet`, its arguments, and its task;
- :mod:`.protocol`, :mod:`.tracker` and :mod:`.messages`: the sync
  protocol, pure (sans I/O): what to send Redis next and what to tell each
  breaker;
- :mod:`.transport` and :mod:`.session`: the protocol driven over coredis
  (sessions, rounds, pub/sub, timeouts, back-off);
- :mod:`.scripts` (the Lua scripts), :mod:`.errors` (what a failure says),
  :mod:`.hash_slot`, :mod:`.urls`.

Talks to breakers only through the core's fleet seam
(:mod:`breaky._core.fleet`). The core never imports this room.
"""
