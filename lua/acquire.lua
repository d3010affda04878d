-- Grants, renews or refuses a seat on one license, atomically.
--
-- KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
-- KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
-- KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
-- ARGV[1]  session id to use if a new seat is granted
-- ARGV[2]  hardware id
-- ARGV[3]  lease TTL in ms (>= 1)
-- ARGV[4]  max seats
-- ARGV[5]  extra ms the keys outlive the furthest lease
--
-- Returns {code, session, expires_at_ms, seats_used} where code is
-- 0 = full (session "" and expiry 0), 1 = granted, 2 = renewed (session is
-- the original one).
--
-- A lease is live iff now < expiry. Time comes from the server (TIME): Redis 7
-- replicates a script's effects, so reading the clock here is safe.
-- Cost: O(expired members + log n).

local leases, hw_map, sess_map = KEYS[1], KEYS[2], KEYS[3]
local session, hw = ARGV[1], ARGV[2]
local ttl, max_seats, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Lua 5.1 would print large numbers as "1.7e+12"; format them as integers.
local function int(x)
  return string.format('%.0f', x)
end

-- Purge lapsed leases and their hash entries before counting anything.
local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', int(now))
for _, s in ipairs(lapsed) do
  local h = redis.call('HGET', sess_map, s)
  if h and redis.call('HGET', hw_map, h) == s then
    redis.call('HDEL', hw_map, h)
  end
  redis.call('HDEL', sess_map, s)
end
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', int(now))
end

local function touch_keys()
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if last[2] then
    local ms = tonumber(last[2]) - now + grace
    redis.call('PEXPIRE', leases, int(ms))
    redis.call('PEXPIRE', hw_map, int(ms))
    redis.call('PEXPIRE', sess_map, int(ms))
  end
end

local expires = now + ttl

-- One live lease per hardware id: renew it, keeping its session id.
local held = redis.call('HGET', hw_map, hw)
if held then
  local score = redis.call('ZSCORE', leases, held)
  if score and tonumber(score) > now then
    redis.call('ZADD', leases, 'XX', int(expires), held)
    touch_keys()
    return {2, held, expires, redis.call('ZCARD', leases)}
  end
  -- A stale mapping (its lease is gone): drop it.
  redis.call('HDEL', hw_map, hw)
  if redis.call('HGET', sess_map, held) == hw then
    redis.call('HDEL', sess_map, held)
  end
end

local used = redis.call('ZCARD', leases)
if used >= max_seats then
  return {0, '', 0, used}
end

redis.call('ZADD', leases, int(expires), session)
redis.call('HSET', hw_map, hw, session)
redis.call('HSET', sess_map, session, hw)
touch_keys()
return {1, session, expires, used + 1}
