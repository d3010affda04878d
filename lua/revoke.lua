-- Drops every lease of a license (suspension or deactivation), and its line.
-- Runs after lease.lua (KEYS).
--
-- Returns how many leases were held. Idempotent. Cost: O(n).

local held = redis.call('ZCARD', leases)
redis.call('DEL', leases, hw_map, sess_map, grace_key, beats)
redis.call('DEL', line, patience_key, holds, tickets)
return held
