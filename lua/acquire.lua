-- Grants, renews or refuses a seat on one license, atomically.
-- Runs after lease.lua (KEYS, now, int, forget, purge, touch_keys).
--
-- ARGV[1]  session id to use if a new seat is granted
-- ARGV[2]  hardware id
-- ARGV[3]  lease TTL in ms (>= 1)
-- ARGV[4]  max seats
-- ARGV[5]  extra ms the keys outlive the furthest lease
--
-- Returns {code, session, expires_at_ms, seats_used} where code is
-- 0 = full (session "" and expiry 0), 1 = granted, 2 = renewed (session is
-- the original one). Cost: O(expired members + log n).

local session, hw = ARGV[1], ARGV[2]
local ttl, max_seats, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

purge()

local expires = now + ttl

-- One live lease per hardware id: renew it, keeping its session id.
local held = redis.call('HGET', hw_map, hw)
if held then
  local score = redis.call('ZSCORE', leases, held)
  if score and tonumber(score) > now then
    redis.call('ZADD', leases, 'XX', int(expires), held)
    touch_keys(grace)
    return {2, held, expires, redis.call('ZCARD', leases)}
  end
  -- A stale mapping (its lease is gone): drop it.
  forget(held)
  redis.call('HDEL', hw_map, hw)
end

local used = redis.call('ZCARD', leases)
if used >= max_seats then
  return {0, '', 0, used}
end

redis.call('ZADD', leases, int(expires), session)
redis.call('HSET', hw_map, hw, session)
redis.call('HSET', sess_map, session, hw)
touch_keys(grace)
return {1, session, expires, used + 1}
