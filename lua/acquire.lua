-- Grants, renews, reclaims or refuses a seat on one license, atomically, and
-- keeps the license's line for seats (joins, claims).
-- Runs after lease.lua (KEYS, now, grace, int, forget, purge, live_count,
-- touch_keys, room, settle, ticket_drop, ticket_info, line_touch).
--
-- ARGV[1]   session id to use if a new seat is granted
-- ARGV[2]   hardware id
-- ARGV[3]   lease TTL in ms (>= 1); hours for a borrowed seat
-- ARGV[4]   max seats
-- ARGV[5]   extra ms the keys outlive the furthest lease's grace
-- ARGV[6]   the license's offline grace in ms (remembered for later calls)
-- ARGV[7]   the license's offline overdraft
-- ARGV[8]   the line's hold in ms: how long a freed seat waits for its ticket
-- ARGV[9]   the line's patience in ms: how long a ticket stays unpolled
-- ARGV[10]  the longest line
-- ARGV[11]  ticket id to join the line with if no seat is free; "" to not wait
-- ARGV[12]  ticket id claimed; "" for none (the machine's own ticket, if it
--           has one, is claimed anyway)
--
-- Returns {code, id, a, b, c, d, e}:
--   0 full       {0, "", 0, live, graced, queued, -1}
--   1 granted    {1, session, expires_at_ms, live, graced, queued, waited_ms or -1}
--   2 renewed    {2, session, expires_at_ms, live, graced, queued, -1}
--               (a renewal or a reclaim: session is the original one)
--   3 queued     {3, ticket, position, hold_until_ms or 0, queued, 0, -1}
--   4 no ticket  {4, "", 0, 0, 0, 0, -1}
--   5 unseeded   {5, "", 0, 0, 0, 0, -1}: this ledger lost the license's
--               leases; nothing was done (seed.lua, then ask again)
-- A lease is never shortened: a renewal keeps the later of its expiry and
-- now + TTL. Cost: O(forgotten + log n), plus the line's settle when there
-- is a line.

local session, hw = ARGV[1], ARGV[2]
local ttl, max_seats, extra = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local overdraft = tonumber(ARGV[7])
local hold, patience, max_len = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local join, claim = ARGV[11], ARGV[12]
if redis.call('EXISTS', seeded) == 0 then
  return {5, '', 0, 0, 0, 0, -1}
end
grace = tonumber(ARGV[6])
redis.call('SET', grace_key, int(grace), 'KEEPTTL')

purge()

local expires = now + ttl
local live = live_count()
local total = redis.call('ZCARD', leases)
local free = room(max_seats, overdraft, live, total)
local held, waiting = settle(free, hold)

-- Tickets in line now (the common case, no line, costs no call).
local function queued()
  if waiting == 0 then
    return 0
  end
  return redis.call('ZCARD', line)
end

-- The machine's ticket, if it has one: named, or found by hardware id.
local mine = false
if claim ~= '' then
  local _, owner = ticket_info(claim)
  if owner ~= hw or not redis.call('ZSCORE', line, claim) then
    return {4, '', 0, 0, 0, 0, -1}
  end
  mine = claim
elseif waiting > 0 then
  mine = redis.call('HGET', tickets, 'hw:' .. hw)
  if mine and not redis.call('ZSCORE', line, mine) then
    mine = false
  end
end
-- Whether this request may take a free seat: its ticket holds one, or one
-- is free beyond those held for tickets.
local holding, waited = false, -1
if mine then
  holding = redis.call('ZRANK', line, mine) < held
  if holding then
    local joined = ticket_info(mine)
    waited = now - (joined or now)
  end
end

-- No seat for this request: its place in line if it joins (renewing the
-- patience of the ticket it has, or appending a new one if the line has
-- room), else full.
local function wait_or_refuse()
  touch_keys(extra)
  local t = mine
  if join == '' or (not t and waiting >= max_len) then
    return {0, '', 0, live, total - live, queued(), -1}
  end
  if not t then
    t = join
    redis.call('ZADD', line, redis.call('HINCRBY', tickets, 'seq', 1), t)
    redis.call('HSET', tickets, t, int(now) .. '\t' .. hw, 'hw:' .. hw, t)
    waiting = waiting + 1
  end
  redis.call('ZADD', patience_key, int(now + patience), t)
  line_touch(patience + hold + extra)
  local h = redis.call('ZSCORE', holds, t)
  return {3, t, redis.call('ZRANK', line, t) + 1, h and tonumber(h) or 0, queued(), 0, -1}
end

-- One lease per hardware id: renew it if live, reclaim it if graced and a
-- live seat is free for it, keeping its session id either way.
local owned = redis.call('HGET', hw_map, hw)
if owned then
  local score = redis.call('ZSCORE', leases, owned)
  if score then
    local was_live = tonumber(score) > now
    if not (was_live or holding or max_seats - live > held) then
      return wait_or_refuse()
    end
    if mine then
      ticket_drop(mine)
    end
    local e = math.max(tonumber(score), expires)
    redis.call('ZADD', leases, 'XX', int(e), owned)
    touch_keys(extra)
    if was_live then
      return {2, owned, e, live, total - live, queued(), -1}
    end
    return {2, owned, e, live + 1, total - live - 1, queued(), -1}
  end
  -- A stale mapping (its lease is gone): drop it.
  forget(owned)
  redis.call('HDEL', hw_map, hw)
end

if not (holding or free > held) then
  return wait_or_refuse()
end
if mine then
  ticket_drop(mine)
end
redis.call('ZADD', leases, int(expires), session)
redis.call('HSET', hw_map, hw, session)
redis.call('HSET', sess_map, session, hw)
touch_keys(extra)
return {1, session, expires, live + 1, total - live, queued(), waited}
