-- Puts back the leases of a license after this ledger lost them (Redis
-- restarted without its data, a failover to a lagging replica, eviction):
-- the store's open sessions, as the caller read them. Acquires and
-- heartbeats refuse to act on a license until it is seeded, so no seat is
-- granted on an empty ledger while sessions hold seats.
-- Runs after lease.lua (KEYS, now, grace, int, touch_keys).
--
-- ARGV[1]  the license's offline grace in ms
-- ARGV[2]  extra ms the keys outlive the furthest lease's grace
-- ARGV[3k], ARGV[3k+1], ARGV[3k+2] (k >= 1)  session id, hardware id, lease
--          expiry in ms, of each open session
--
-- Returns how many leases were put back, or -1 if the license was seeded
-- already (by another node; nothing written). Leases past their grace are
-- skipped; a lease the ledger still holds keeps the ledger's expiry (it is
-- the truth, and the store's may trail it: a ledger upgraded from before
-- the marker existed holds its leases and no marker); of two leases of one
-- machine the later wins. Cost: O(n log n).

if redis.call('EXISTS', seeded) == 1 then
  return -1
end
grace = tonumber(ARGV[1])
local extra = tonumber(ARGV[2])
local put = 0
for i = 3, #ARGV, 3 do
  local session, hw, expires = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if expires + grace > now and not redis.call('ZSCORE', leases, session) then
    local other = redis.call('HGET', hw_map, hw)
    local other_expires = other and redis.call('ZSCORE', leases, other)
    if not other_expires or tonumber(other_expires) < expires then
      if other then
        redis.call('ZREM', leases, other)
        redis.call('HDEL', sess_map, other)
      end
      redis.call('ZADD', leases, int(expires), session)
      redis.call('HSET', hw_map, hw, session)
      redis.call('HSET', sess_map, session, hw)
      put = put + 1
    end
  end
end
redis.call('SET', grace_key, int(grace), 'KEEPTTL')
redis.call('SET', seeded, '1', 'PX', int(extra))
touch_keys(extra)
-- The marker lives as long as the leases it vouches for (touch_keys leaves
-- keys whose expiry is long enough alone).
redis.call('PEXPIRE', seeded, int(math.max(redis.call('PTTL', leases), extra)))
return put
