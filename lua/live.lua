-- Lists the live leases of a license.
--
-- KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
-- KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
-- KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
--
-- Purges lapsed leases (and their hash entries), then returns
-- {{session_id, expires_at_ms}, ...}. Cost: O(expired + live).

local leases, hw_map, sess_map = KEYS[1], KEYS[2], KEYS[3]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function int(x)
  return string.format('%.0f', x)
end

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

local out = {}
local rows = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do
  out[#out + 1] = {rows[i], tonumber(rows[i + 1])}
end
return out
