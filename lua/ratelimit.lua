-- Counts one request against a rate limit: GCRA on one key, so that every
-- node shares the limit. The same arithmetic as the in-process limiter
-- (governor), checked by tests/ratelimit_conformance.rs; see
-- src/ratelimit/mod.rs for the algorithm.
--
-- KEYS[1]  sw:rl:<limit>:<hashed key>  STRING theoretical arrival time (ms)
-- ARGV[1]  now, in ms since the Unix epoch (the calling node's clock: see
--          docs/decisions.md on why not TIME)
-- ARGV[2]  T, the emission interval in ms (>= 1)
-- ARGV[3]  T * (N - 1), the burst tolerance in ms
--
-- Returns {1, 0} when allowed, or {0, retry_after_ms} when refused (a
-- refusal writes nothing). The key expires when its arrival time passes:
-- from then on it is indistinguishable from a fresh key. One key only, so
-- the script runs unchanged on Redis Cluster.

local key = KEYS[1]
local now, interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local tat = tonumber(redis.call('GET', key) or now)
local earliest = tat - tolerance
if now < earliest then
  return {0, earliest - now}
end

tat = math.max(tat, now) + interval
-- Lua 5.1 would print large numbers as "1.7e+12"; format them as integers.
redis.call('SET', key, string.format('%.0f', tat), 'PX', string.format('%.0f', tat - now))
return {1, 0}
