-- What the ledger holds of some sessions of one license, for the sweep.
-- Runs after lease.lua (KEYS, now, grace, purge, live_count).
--
-- ARGV  session ids
--
-- Forgets leases past their grace, then returns
-- {now_ms, grace_ms, live, graced, expiry_1, ..., expiry_n} where expiry_i
-- is the lease expiry in ms of ARGV[i], or -1 if it is not held. Cost:
-- O(forgotten + n log n).

purge()

local live = live_count()
local out = {now, grace, live, redis.call('ZCARD', leases) - live}
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', leases, ARGV[i])
  out[#out + 1] = score and tonumber(score) or -1
end
return out
