-- Lists the live leases of a license.
-- Runs after lease.lua (KEYS, now, int, purge).
--
-- Purges leases past their grace, then returns
-- {{session_id, expires_at_ms}, ...} of the live ones. Cost: O(forgotten +
-- live).

purge()

local out = {}
local rows = redis.call('ZRANGEBYSCORE', leases, '(' .. int(now), '+inf', 'WITHSCORES')
for i = 1, #rows, 2 do
  out[#out + 1] = {rows[i], tonumber(rows[i + 1])}
end
return out
