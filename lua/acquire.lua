-- Grants, renews, reclaims or refuses a seat on one license, atomically.
-- Runs after lease.lua (KEYS, now, grace, int, forget, purge, live_count,
-- touch_keys).
--
-- ARGV[1]  session id to use if a new seat is granted
-- ARGV[2]  hardware id
-- ARGV[3]  lease TTL in ms (>= 1)
-- ARGV[4]  max seats
-- ARGV[5]  extra ms the keys outlive the furthest lease's grace
-- ARGV[6]  the license's offline grace in ms (remembered for later calls)
-- ARGV[7]  the license's offline overdraft
--
-- Returns {code, session, expires_at_ms, live, graced} where code is
-- 0 = full (session "" and expiry 0), 1 = granted, 2 = renewed or reclaimed
-- (session is the original one). Cost: O(forgotten + log n).

local session, hw = ARGV[1], ARGV[2]
local ttl, max_seats, extra = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local overdraft = tonumber(ARGV[7])
grace = tonumber(ARGV[6])
redis.call('SET', grace_key, int(grace), 'KEEPTTL')

purge()

local expires = now + ttl
local live = live_count()
local total = redis.call('ZCARD', leases)

-- One lease per hardware id: renew it if live, reclaim it if graced and a
-- live seat is free, keeping its session id either way.
local held = redis.call('HGET', hw_map, hw)
if held then
  local score = redis.call('ZSCORE', leases, held)
  if score then
    local was_live = tonumber(score) > now
    if was_live or live < max_seats then
      redis.call('ZADD', leases, 'XX', int(expires), held)
      touch_keys(extra)
      if was_live then
        return {2, held, expires, live, total - live}
      end
      return {2, held, expires, live + 1, total - live - 1}
    end
    touch_keys(extra)
    return {0, '', 0, live, total - live}
  end
  -- A stale mapping (its lease is gone): drop it.
  forget(held)
  redis.call('HDEL', hw_map, hw)
end

if live >= max_seats or total >= max_seats + overdraft then
  touch_keys(extra)
  return {0, '', 0, live, total - live}
end

redis.call('ZADD', leases, int(expires), session)
redis.call('HSET', hw_map, hw, session)
redis.call('HSET', sess_map, session, hw)
touch_keys(extra)
return {1, session, expires, live + 1, total - live}
