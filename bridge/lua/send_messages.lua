-- Enqueue messages, dropping any whose message id was sent within the duplicate window
-- (Service Bus duplicate detection).
-- ARGV: duplicate_window_ms, then triples: message id, envelope JSON, enqueue-at ms (0: now)
-- Returns how many messages were enqueued.
local window_ms = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', K_SEEN, '-inf', now_ms - window_ms)

local enqueued, ready_now = 0, 0
for i = 2, #ARGV, 3 do
  local message_id, envelope, enqueue_at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if not redis.call('ZSCORE', K_SEEN, message_id) then
    redis.call('ZADD', K_SEEN, now_ms, message_id)
    local seq = redis.call('INCR', K_SEQ)
    redis.call('HSET', K_MESSAGES, seq, envelope)
    if enqueue_at > now_ms then
      redis.call('ZADD', K_SCHEDULED, enqueue_at, seq)
    else
      redis.call('ZADD', K_READY, seq, seq)
      ready_now = ready_now + 1
    end
    enqueued = enqueued + 1
  end
end
if ready_now > 0 then
  wake_receivers()
end
return enqueued
