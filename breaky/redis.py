"""Fleet-wide circuit breakers on Redis or Valkey: ``pip install "breaky[redis]"``.

Every breaker of a supervisor opened with ``fleet=RedisFleet(...)`` joins the
fleet under its name. Each instance still trips on its own; when ``quorum``
live instances see a breaker OFF, the fleet holds it OFF everywhere, one
instance (the holder of a lease) probes the resource, and when that probe
starts it the fleet turns ON again. See the how-to on fleets in the docs.

What it costs: each instance sends one heartbeat every ``report_ttl / 3``
seconds, whatever its number of breakers. Only a breaker that reports OFF,
holds the lease or is held costs more: one share of a script call per period,
batched with the others (one call per hash slot and up to 200 breakers,
pipelined). State changes and announcements go out as they come, and the
leases this instance holds are renewed before any other per-breaker work.

Where the fleet notices that Redis is gone: connecting and every round trip
run under a Trio timeout of the fleet's own (``min(1, report_ttl / 3)``
seconds), and coredis's pub/sub does not reconnect by itself (a lost
subscription ends the session). The first round trip that fails ends the
session: one record is logged, every breaker the fleet held OFF goes back to
its local retries, and the fleet tries again until Redis answers; then it
re-joins. A refusal that is configuration, not outage (a replica, a wrong
password, a cluster node behind a plain client...) is logged once as an
error with its fix, and retried with a back-off. With a Sentinel primary
client, the Sentinels are asked where the primary is once a period, and a
failover ends the session at once: the next one reaches the new primary.
"""

from ._core.public import publish
from ._fleet.redis import RedisFleet

__all__ = ["RedisFleet"]

publish(__name__, globals())
del publish
