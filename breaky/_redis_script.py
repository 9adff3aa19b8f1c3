"""The one Lua script a Redis fleet runs: every fleet transition, atomically.

It is constant text, loaded once with ``SCRIPT LOAD`` (coredis's
``register_script``); breaker and instance names only ever arrive as KEYS and
ARGV, never in the script. Time is the Redis server's (``TIME``), so the
hosts' clocks do not matter.

KEYS: ``members`` (sorted set: instance -> expiry, ms), ``reports`` (sorted
set: instance -> expiry, of the instances that see the breaker OFF),
``fleet`` (string: why the fleet holds the breaker OFF; absent while it does
not), ``probe`` (string: the prober's token, with a time to live: the lease).

ARGV: instance, token, mode (``report``, ``withdraw``, ``recover`` or
``leave``), report time to live (ms), lease time to live (ms), quorum,
channel, breaker.

It returns ``{off, prober, reason, reporting, live}``.
"""

from __future__ import annotations

__all__ = ["SYNC"]

SYNC = """
local members, reports, fleet, probe = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local instance, token, mode = ARGV[1], ARGV[2], ARGV[3]
local ttl, lease, quorum = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local channel, breaker = ARGV[7], ARGV[8]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function announce(event)
  redis.call('PUBLISH', channel,
    cjson.encode({breaker = breaker, event = event, by = instance}))
end

-- Instances that stopped renewing (dead, or cut off) count no more.
redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
redis.call('ZREMRANGEBYSCORE', reports, '-inf', now)

if mode == 'leave' then
  redis.call('ZREM', members, instance)
  redis.call('ZREM', reports, instance)
  if redis.call('GET', probe) == token then
    redis.call('DEL', probe)
    announce('free')
  end
  return {0, 0, '', 0, 0}
end

redis.call('ZADD', members, now + ttl, instance)
redis.call('PEXPIRE', members, ttl)
if mode == 'report' then
  redis.call('ZADD', reports, now + ttl, instance)
  redis.call('PEXPIRE', reports, ttl)
else
  redis.call('ZREM', reports, instance)
end

local reason = redis.call('GET', fleet)
if reason and mode == 'recover' then
  -- A start succeeded here: the fleet is ON, reports and lease are void.
  redis.call('DEL', fleet, reports, probe)
  reason = false
  announce('on')
end

local reporting = redis.call('ZCARD', reports)
local live = redis.call('ZCARD', members)
if not reason and reporting >= quorum then
  reason = reporting .. ' of ' .. live .. ' instances report OFF'
  redis.call('SET', fleet, reason)
  announce('off')
end

local prober = 0
if reason then
  if redis.call('GET', probe) == token then
    redis.call('PEXPIRE', probe, lease)
    prober = 1
  elseif redis.call('SET', probe, token, 'NX', 'PX', lease) then
    prober = 1
  end
end
return {reason and 1 or 0, prober, reason or '', reporting, live}
"""
