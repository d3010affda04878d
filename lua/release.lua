-- Frees a seat: removes the caller's own member and its hash entries.
--
-- KEYS[1]  sw:{<org>}:lic:<license>:leases  ZSET session_id -> lease expiry (ms)
-- KEYS[2]  sw:{<org>}:lic:<license>:hw      HASH hardware_id -> session_id
-- KEYS[3]  sw:{<org>}:lic:<license>:sess    HASH session_id -> hardware_id
-- ARGV[1]  session id
--
-- Returns 1 if a live lease was removed, 0 otherwise (unknown, already
-- released, or lapsed but not yet purged, which is still cleaned up).
-- The hardware mapping is only deleted if it still points to this session.
-- Key expiry needs no refresh: removing a member never moves the furthest
-- lease later. Cost: O(log n).

local leases, hw_map, sess_map = KEYS[1], KEYS[2], KEYS[3]
local session = ARGV[1]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local score = redis.call('ZSCORE', leases, session)
redis.call('ZREM', leases, session)

local h = redis.call('HGET', sess_map, session)
if h and redis.call('HGET', hw_map, h) == session then
  redis.call('HDEL', hw_map, h)
end
redis.call('HDEL', sess_map, session)

if score and tonumber(score) > now then
  return 1
end
return 0
