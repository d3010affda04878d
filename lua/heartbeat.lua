-- Extends a live lease to now + TTL.
--
-- KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
-- KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
-- KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
-- ARGV[1]  session id
-- ARGV[2]  lease TTL in ms (>= 1)
-- ARGV[3]  extra ms the keys outlive the furthest lease
--
-- Returns the new expiry in ms, or nil if the lease is unknown, released or
-- lapsed. A lapsed lease never revives, even if no call has purged it yet;
-- it is cleaned up here instead. Cost: O(log n).

local leases, hw_map, sess_map = KEYS[1], KEYS[2], KEYS[3]
local session = ARGV[1]
local ttl, grace = tonumber(ARGV[2]), tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function int(x)
  return string.format('%.0f', x)
end

local score = redis.call('ZSCORE', leases, session)
if not score then
  return false
end

if tonumber(score) <= now then
  redis.call('ZREM', leases, session)
  local h = redis.call('HGET', sess_map, session)
  if h and redis.call('HGET', hw_map, h) == session then
    redis.call('HDEL', hw_map, h)
  end
  redis.call('HDEL', sess_map, session)
  return false
end

local expires = now + ttl
redis.call('ZADD', leases, 'XX', int(expires), session)

local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
local ms = tonumber(last[2]) - now + grace
redis.call('PEXPIRE', leases, int(ms))
redis.call('PEXPIRE', hw_map, int(ms))
redis.call('PEXPIRE', sess_map, int(ms))

return expires
