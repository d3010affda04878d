-- Frees a seat: removes the caller's own member and its hash entries.
-- Runs after lease.lua (KEYS, now, grace, forget).
--
-- ARGV[1]  session id
--
-- Returns {held, live, graced}: held is 1 if a lease was held (live, or
-- lapsed within its grace), 0 otherwise (unknown, already released, or past
-- its grace but not yet purged, which is still cleaned up); live and graced
-- count the license's leases after the release, for the seat gauges. Key
-- expiry needs no refresh: removing a member never moves the furthest lease
-- later. Cost: O(log n).

local session = ARGV[1]

local score = redis.call('ZSCORE', leases, session)
redis.call('ZREM', leases, session)
forget(session)
-- The last lease gone: the remembered grace goes too (acquire sets it again).
if redis.call('EXISTS', leases) == 0 then
  redis.call('DEL', grace_key, beats)
end

local held = 0
if score and tonumber(score) > now - grace then
  held = 1
end
local live = live_count()
local graced = redis.call('ZCOUNT', leases, '(' .. int(now - grace), int(now))
return {held, live, graced}
