"""The two Lua scripts a Redis fleet runs: its heartbeat, and its breakers' syncs.

Both are constant text, loaded once per session with ``SCRIPT LOAD``; breaker
and instance names only ever arrive as KEYS and ARGV, never in the scripts.
Time is the Redis server's (``TIME``), so the hosts' clocks do not matter.

``BEAT`` proves that an instance lives, once per period whatever its number of
breakers. KEYS: ``instances`` (sorted set: instance -> expiry, ms). ARGV:
instance, mode (``beat`` or ``leave``), time to live (ms). It returns how many
instances live.

``SYNC`` syncs any number of breakers whose keys share one hash slot (each
breaker's keys carry its name as a hash tag, so one breaker always fits; the
fleet groups breakers by slot on Redis Cluster). KEYS: three per breaker,
``reports`` (sorted set: instance -> expiry, of the instances that see it
OFF), ``fleet`` (string: why the fleet holds it OFF, with a time to live that
the instances it holds renew) and ``probe`` (string: the prober's token, with
a time to live: the lease). On a single server one more key may
come last, ``instances`` (the heartbeats), whose live ones the reason counts;
on a cluster (it is in another slot) the count comes as an argument. ARGV:
instance, token, time to live (ms), lease (ms), quorum, channel, live
instances (the last heartbeat's count), then a mode and a name per breaker.
The modes:

- ``report``: this instance sees the breaker OFF (the report is renewed);
- ``check``: it does not (its report, if any, is withdrawn);
- ``recover``: a start succeeded here: the fleet turns ON;
- ``yield``: it cannot probe (forced OFF): it drops its report and its lease;
- ``leave``: the breaker stopped here: report and lease go.

While the fleet holds a breaker OFF, each call but ``yield`` and ``leave``
renews the fleet's state and takes the lease if it is free, so the state lives
exactly as long as an instance that takes part renews it.

It returns three values per breaker: ``off`` (1 or 0), ``prober`` (1 if this
instance holds the lease) and the reason.
"""

from __future__ import annotations

__all__ = ["BEAT", "SYNC"]

BEAT = """
local instances, instance, mode = KEYS[1], ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', instances, '-inf', now)
if mode == 'leave' then
  redis.call('ZREM', instances, instance)
else
  redis.call('ZADD', instances, now + ttl, instance)
  redis.call('PEXPIRE', instances, ttl)
end
return redis.call('ZCARD', instances)
"""

SYNC = """
local instance, token = ARGV[1], ARGV[2]
local ttl, lease, quorum = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local channel, live = ARGV[6], tonumber(ARGV[7])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

if #KEYS % 3 == 1 then
  -- One server: the heartbeats' key came last; count them fresh.
  live = redis.call('ZCOUNT', KEYS[#KEYS], '(' .. now, '+inf')
end

local replies = {}
for i = 1, math.floor(#KEYS / 3) do
  local reports, fleet, probe = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local mode, breaker = ARGV[6 + 2 * i], ARGV[7 + 2 * i]

  local function announce(event)
    redis.call('PUBLISH', channel,
      cjson.encode({breaker = breaker, event = event, by = instance}))
  end

  local function release()
    if redis.call('GET', probe) == token then
      redis.call('DEL', probe)
      announce('free')
    end
  end

  -- Instances that stopped renewing (dead, or cut off) count no more.
  redis.call('ZREMRANGEBYSCORE', reports, '-inf', now)
  if mode == 'report' then
    redis.call('ZADD', reports, now + ttl, instance)
    redis.call('PEXPIRE', reports, ttl)
  else
    redis.call('ZREM', reports, instance)
  end

  local reason = redis.call('GET', fleet)
  local prober = 0
  if mode == 'leave' or mode == 'yield' then
    release()
  else
    if reason and mode == 'recover' then
      -- A start succeeded here: the fleet is ON, reports and lease are void.
      redis.call('DEL', fleet, reports, probe)
      reason = false
      announce('on')
    end
    local reporting = redis.call('ZCARD', reports)
    if not reason and reporting >= quorum then
      reason = reporting .. ' of ' .. math.max(live, reporting)
        .. ' instances report OFF'
      redis.call('SET', fleet, reason, 'PX', ttl)
      announce('off')
    elseif reason then
      redis.call('PEXPIRE', fleet, ttl)
    end
    if reason then
      if redis.call('GET', probe) == token then
        redis.call('PEXPIRE', probe, lease)
        prober = 1
      elseif redis.call('SET', probe, token, 'NX', 'PX', lease) then
        prober = 1
      end
    end
  end
  replies[#replies + 1] = reason and 1 or 0
  replies[#replies + 1] = prober
  replies[#replies + 1] = reason or ''
end
return replies
"""
