-- Extends a live lease to now + TTL (never shortening it), if the session's heartbeat throttle
-- allows it: the lease and the rate limit in one round trip.
-- Runs after lease.lua (KEYS, now, grace, int, forget, touch_for).
--
-- ARGV[1]  session id
-- ARGV[2]  lease TTL in ms (>= 1)
-- ARGV[3]  extra ms the keys outlive the furthest lease's grace
-- ARGV[4]  the throttle's emission interval T in ms; 0 for no throttle
-- ARGV[5]  the throttle's burst tolerance T * (N - 1) in ms
--
-- Returns {1, new expiry ms} when extended; {0, 0} if the lease is unknown,
-- released or lapsed; {2, retry after ms} when throttled, which writes
-- nothing. A lapsed lease never revives here, even if no call has purged it
-- yet: a graced one is reclaimed only by its machine's acquire, and one past
-- its grace is cleaned up here. Cost: O(log n).
--
-- The throttle is GCRA, the arithmetic of ratelimit.lua, with the session's
-- theoretical arrival time in the beats hash; it goes when the session's
-- lease is forgotten.

local session = ARGV[1]
local ttl, extra = tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, tolerance = tonumber(ARGV[4]), tonumber(ARGV[5])

local score = redis.call('ZSCORE', leases, session)
if not score then
  -- Gone, or lost with the rest of this ledger's data: {3, 0} asks the
  -- caller to seed the license and beat again.
  if redis.call('EXISTS', seeded) == 0 then
    return {3, 0}
  end
  return {0, 0}
end

if tonumber(score) <= now then
  if tonumber(score) <= now - grace then
    redis.call('ZREM', leases, session)
    forget(session)
  end
  return {0, 0}
end

if interval > 0 then
  local tat = tonumber(redis.call('HGET', beats, session) or now)
  local earliest = tat - tolerance
  if now < earliest then
    return {2, earliest - now}
  end
  -- A hash created just now has no expiry yet: give it the leases' own.
  -- Only a new field can mean a new hash, so a session's later beats skip
  -- the PTTL.
  if redis.call('HSET', beats, session, int(math.max(tat, now) + interval)) == 1
      and redis.call('PTTL', beats) == -1 then
    local left = redis.call('PTTL', leases)
    if left > 0 then
      redis.call('PEXPIRE', beats, left)
    end
  end
end

-- Never shorter: a borrowed lease keeps its end.
local expires = now + ttl
if tonumber(score) >= expires then
  return {1, tonumber(score)}
end
redis.call('ZADD', leases, 'XX', int(expires), session)
touch_for(expires, extra)
return {1, expires}
