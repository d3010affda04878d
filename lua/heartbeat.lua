-- Extends a live lease to now + TTL.
-- Runs after lease.lua (KEYS, now, grace, int, forget, touch_for).
--
-- ARGV[1]  session id
-- ARGV[2]  lease TTL in ms (>= 1)
-- ARGV[3]  extra ms the keys outlive the furthest lease's grace
--
-- Returns the new expiry in ms, or nil if the lease is unknown, released or
-- lapsed. A lapsed lease never revives here, even if no call has purged it
-- yet: a graced one is reclaimed only by its machine's acquire, and one
-- past its grace is cleaned up here. Cost: O(log n).

local session = ARGV[1]
local ttl, extra = tonumber(ARGV[2]), tonumber(ARGV[3])

local score = redis.call('ZSCORE', leases, session)
if not score then
  return false
end

if tonumber(score) <= now then
  if tonumber(score) <= now - grace then
    redis.call('ZREM', leases, session)
    forget(session)
  end
  return false
end

local expires = now + ttl
redis.call('ZADD', leases, 'XX', int(expires), session)
touch_for(expires, extra)
return expires
