-- Move the oldest max_count dead letters back to the queue with a fresh delivery count.
-- ARGV: max_count
-- Returns how many were moved.
local max_count = tonumber(ARGV[1])

local moved = redis.call('ZRANGE', K_DEAD, 0, max_count - 1)
for _, seq in ipairs(moved) do
  redis.call('ZREM', K_DEAD, seq)
  redis.call('HDEL', K_REASONS, seq)
  redis.call('HDEL', K_DELIVERIES, seq)
  redis.call('ZADD', K_READY, seq, seq)
end
if #moved > 0 then
  wake_receivers()
end
return #moved
