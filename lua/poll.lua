-- Where a ticket stands in its license's line: settles the line, renews the
-- ticket's patience and answers its place.
-- Runs after lease.lua (KEYS, now, grace, int, purge, live_count, room,
-- settle, line_touch).
--
-- ARGV[1]  ticket id
-- ARGV[2]  max seats
-- ARGV[3]  the license's offline overdraft
-- ARGV[4]  the license's offline grace in ms
-- ARGV[5]  the line's hold in ms
-- ARGV[6]  the line's patience in ms
-- ARGV[7]  extra ms the line's keys outlive a ticket
--
-- Returns {position, hold_until_ms or 0, queued}; position 0 when the ticket
-- is not in line. Cost: that of settle, plus O(log n).

local ticket = ARGV[1]
local max_seats, overdraft = tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, patience, extra = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
grace = tonumber(ARGV[4])

purge()
local live = live_count()
settle(room(max_seats, overdraft, live, redis.call('ZCARD', leases)), hold)

local rank = redis.call('ZRANK', line, ticket)
if not rank then
  return {0, 0, redis.call('ZCARD', line)}
end
redis.call('ZADD', patience_key, int(now + patience), ticket)
line_touch(patience + hold + extra)
local h = redis.call('ZSCORE', holds, ticket)
return {rank + 1, h and tonumber(h) or 0, redis.call('ZCARD', line)}
