-- What every ledger script shares. src/ledger/redis.rs prepends this file
-- to each operation's script, so these rules exist once; each script is
-- still loaded and run on its own (EVALSHA).
--
-- KEYS, the same for every script:
--   KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
--   KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
--   KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
--   KEYS[4]  sw:{<org>}:lic:<license>:grace   STRING the license's offline grace (ms)
--   KEYS[5]  sw:{<org>}:lic:<license>:beats   HASH session_id -> heartbeat throttle's
--                                              theoretical arrival time (ms)
--
-- A lease is live iff now < expiry, and graced iff expiry <= now < expiry +
-- grace: its token is still valid offline, so it still counts against
-- seats + overdraft. Past its grace it is forgotten. Time comes from the
-- server (TIME): Redis 7 replicates a script's effects, so reading the
-- clock is safe.

local leases, hw_map, sess_map, grace_key, beats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The grace last set by an acquire (which passes the license's policy).
local grace = tonumber(redis.call('GET', grace_key) or '0')

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
  redis.call('HDEL', beats, session)
end

-- Forgets leases past their grace (expiry <= now - grace) and their hash
-- entries. Scripts that count seats call this first. Cost: O(forgotten +
-- log n).
local function purge()
  local cutoff = int(now - grace)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', cutoff)
  for _, s in ipairs(gone) do
    forget(s)
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', cutoff)
  end
end

-- Live leases (expiry > now). Cost: O(log n).
local function live_count()
  return redis.call('ZCOUNT', leases, '(' .. int(now), '+inf')
end

-- Makes the keys outlive a lease expiring at `expires` by its grace plus
-- `extra` ms. Enough after writing one lease: every earlier write ensured the
-- same for its own lease, and time shortens the TTL and every lease's
-- remaining life alike. Cost: one PTTL, and five PEXPIREs every `extra` ms.
local function touch_for(expires, extra)
  local need = expires - now + grace + extra
  if redis.call('PTTL', leases) < need then
    local ms = int(need + extra)
    redis.call('PEXPIRE', leases, ms)
    redis.call('PEXPIRE', hw_map, ms)
    redis.call('PEXPIRE', sess_map, ms)
    redis.call('PEXPIRE', grace_key, ms)
    redis.call('PEXPIRE', beats, ms)
  end
end

-- Keeps the keys until at least `extra` ms after the furthest lease's grace,
-- so an idle license leaves nothing behind. The expiry is set `extra` ms
-- further than needed, so that the calls of the next `extra` ms find it long
-- enough and skip the five PEXPIREs: a heartbeat then costs one PTTL here.
local function touch_keys(extra)
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if last[2] then
    local need = tonumber(last[2]) - now + grace + extra
    if redis.call('PTTL', leases) < need then
      local ms = int(need + extra)
      redis.call('PEXPIRE', leases, ms)
      redis.call('PEXPIRE', hw_map, ms)
      redis.call('PEXPIRE', sess_map, ms)
      redis.call('PEXPIRE', grace_key, ms)
      redis.call('PEXPIRE', beats, ms)
    end
  else
    redis.call('DEL', grace_key, beats)
  end
end

-- ---------------------------------------------------------------------------
