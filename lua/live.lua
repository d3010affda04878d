-- Lists the live leases of a license.
-- Runs after lease.lua (KEYS, purge).
--
-- Purges lapsed leases (and their hash entries), then returns
-- {{session_id, expires_at_ms}, ...}. Cost: O(expired + live).

purge()

local out = {}
local rows = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do
  out[#out + 1] = {rows[i], tonumber(rows[i + 1])}
end
return out
