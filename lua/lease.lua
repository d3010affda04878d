-- What every ledger script shares. src/ledger/redis.rs prepends this file
-- to each operation's script, so these rules exist once; each script is
-- still loaded and run on its own (EVALSHA).
--
-- KEYS, the same for every script:
--   KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
--   KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
--   KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
--
-- A lease is live iff now < expiry. Time comes from the server (TIME):
-- Redis 7 replicates a script's effects, so reading the clock is safe.

local leases, hw_map, sess_map = KEYS[1], KEYS[2], KEYS[3]

local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Lua 5.1 would print large numbers as "1.7e+12"; format them as integers.
local function int(x)
  return string.format('%.0f', x)
end

-- Drops a session's hash entries; the hardware mapping only if it still
-- points to this session (the machine may hold a newer one).
local function forget(session)
  local h = redis.call('HGET', sess_map, session)
  if h and redis.call('HGET', hw_map, h) == session then
    redis.call('HDEL', hw_map, h)
  end
  redis.call('HDEL', sess_map, session)
end

-- Removes lapsed leases (score <= now) and their hash entries. Scripts that
-- count seats call this first. Cost: O(expired + log n).
local function purge()
  local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', int(now))
  for _, s in ipairs(lapsed) do
    forget(s)
  end
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', int(now))
  end
end

-- Keeps the three keys until `grace` ms after the furthest lease, so an idle
-- license leaves nothing behind.
local function touch_keys(grace)
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if last[2] then
    local ms = int(tonumber(last[2]) - now + grace)
    redis.call('PEXPIRE', leases, ms)
    redis.call('PEXPIRE', hw_map, ms)
    redis.call('PEXPIRE', sess_map, ms)
  end
end

-- ---------------------------------------------------------------------------
