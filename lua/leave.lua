-- Takes a ticket out of its license's line.
-- Runs after lease.lua (KEYS, ticket_drop).
--
-- ARGV[1]  ticket id
--
-- Returns 1 if it was in line, else 0. Idempotent. Cost: O(log n).

local ticket = ARGV[1]
if not redis.call('ZSCORE', line, ticket) then
  return 0
end
ticket_drop(ticket)
return 1
