-- Lock up to max_count available messages for lock_ms; first makes due scheduled messages
-- available and releases expired locks (delivering them again, or dead-lettering them).
-- ARGV: max_count, lock_ms, max_deliveries
-- Returns a flat list: seq, delivery count, lock expiry (ms), envelope, seq, ...
local max_count, lock_ms, max_deliveries = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
-- Bounded, so one call never stalls Redis after a long outage; the rest wait for the next call.
local SWEEP_LIMIT = 1000

for _, seq in ipairs(redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', now_ms, 'LIMIT', 0, SWEEP_LIMIT)) do
  redis.call('ZREM', K_SCHEDULED, seq)
  redis.call('ZADD', K_READY, seq, seq)
end
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', K_LOCKED, '-inf', now_ms, 'LIMIT', 0, SWEEP_LIMIT)) do
  release(seq, max_deliveries)
end

local taken = {}
local lock_expires = now_ms + lock_ms
for _, seq in ipairs(redis.call('ZRANGE', K_READY, 0, max_count - 1)) do
  redis.call('ZREM', K_READY, seq)
  local delivery = redis.call('HINCRBY', K_DELIVERIES, seq, 1)
  redis.call('ZADD', K_LOCKED, lock_expires, seq)
  table.insert(taken, seq)
  table.insert(taken, delivery)
  table.insert(taken, lock_expires)
  table.insert(taken, redis.call('HGET', K_MESSAGES, seq))
end
return taken
