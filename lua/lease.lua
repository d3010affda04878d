-- What every ledger script shares. src/ledger/redis.rs prepends this file
-- to each operation's script, so these rules exist once; each script is
-- still loaded and run on its own (EVALSHA).
--
-- KEYS, in this order; scripts that touch only the leases (heartbeat,
-- release, live, states) get the first six, the others all ten:
--   KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
--   KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
--   KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
--   KEYS[4]  sw:{<org>}:lic:<license>:grace   STRING the license's offline grace (ms)
--   KEYS[5]  sw:{<org>}:lic:<license>:beats   HASH session_id -> heartbeat throttle's
--                                              theoretical arrival time (ms)
--   KEYS[6]  sw:{<org>}:lic:<license>:seeded  STRING present while this ledger holds the
--                                              license's leases; absent after Redis lost
--                                              its data (restart without persistence,
--                                              failover, eviction) until a seed
--   KEYS[7]  sw:{<org>}:lic:<license>:line    ZSET ticket -> order of joining (FIFO)
--   KEYS[8]  sw:{<org>}:lic:<license>:patience ZSET ticket -> when it leaves unless polled (ms)
--   KEYS[9]  sw:{<org>}:lic:<license>:holds   ZSET ticket -> until when a freed seat is
--                                              held for it (ms)
--   KEYS[10] sw:{<org>}:lic:<license>:tickets HASH ticket -> "<joined ms>\t<hardware id>",
--                                              "hw:<hardware id>" -> ticket, "seq" -> counter
--
-- A lease is live iff now < expiry, and graced iff expiry <= now < expiry +
-- grace: its token is still valid offline, so it still counts against
-- seats + overdraft. Past its grace it is forgotten. Time comes from the
-- server (TIME): Redis 7 replicates a script's effects, so reading the
-- clock is safe.

local leases, hw_map, sess_map, grace_key, beats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local seeded = KEYS[6]
local line, patience_key, holds, tickets = KEYS[7], KEYS[8], KEYS[9], KEYS[10]

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
    redis.call('PEXPIRE', seeded, ms)
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
      redis.call('PEXPIRE', seeded, ms)
    end
  else
    redis.call('DEL', grace_key, beats)
  end
end

-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- The line for seats (the seat queue): see the SeatLedger trait's docs.

-- Free seats: live seats below max_seats, and no more than the overdraft
-- bound on live and graced leases together allows. Call after purge().
local function room(max_seats, overdraft, live, total)
  return math.max(0, math.min(max_seats - live, max_seats + overdraft - total))
end

-- Takes a ticket out of the line, with its hardware mapping if that still
-- points to it.
local function ticket_drop(t)
  local v = redis.call('HGET', tickets, t)
  if v then
    local hw = string.match(v, '^%-?%d+\t(.*)$')
    if hw and redis.call('HGET', tickets, 'hw:' .. hw) == t then
      redis.call('HDEL', tickets, 'hw:' .. hw)
    end
  end
  redis.call('HDEL', tickets, t)
  redis.call('ZREM', line, t)
  redis.call('ZREM', patience_key, t)
  redis.call('ZREM', holds, t)
end

-- When a ticket joined (ms), and its hardware id.
local function ticket_info(t)
  local v = redis.call('HGET', tickets, t)
  if not v then
    return nil, nil
  end
  local joined, hw = string.match(v, '^(%-?%d+)\t(.*)$')
  return tonumber(joined), hw
end

-- Settles the line with `free` free seats: tickets whose patience or hold
-- ran out leave it, the first `free` tickets hold a seat (a new hold lasts
-- `hold` ms) and the rest hold none. Returns how many tickets hold one, and
-- how many are in line. Cost: one ZCARD without a line; else
-- O((dropped + holders) log n).
local function settle(free, hold)
  if redis.call('ZCARD', line) == 0 then
    return 0, 0
  end
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', patience_key, '-inf', int(now))) do
    ticket_drop(t)
  end
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', holds, '-inf', int(now))) do
    ticket_drop(t)
  end
  for _, t in ipairs(redis.call('ZRANGE', holds, 0, -1)) do
    local rank = redis.call('ZRANK', line, t)
    if (not rank) or rank >= free then
      redis.call('ZREM', holds, t)
    end
  end
  if free > 0 then
    for _, t in ipairs(redis.call('ZRANGE', line, 0, free - 1)) do
      redis.call('ZADD', holds, 'NX', int(now + hold), t)
    end
  end
  local length = redis.call('ZCARD', line)
  return math.min(free, length), length
end

-- Keeps the line's keys for `ms` more: every ticket leaves the line by
-- itself within its patience plus a hold.
local function line_touch(ms)
  for _, k in ipairs({line, patience_key, holds, tickets}) do
    redis.call('PEXPIRE', k, int(ms))
  end
end
