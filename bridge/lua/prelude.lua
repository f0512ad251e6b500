-- Shared head of every local-bus script (local_bus.py prepends it). Every script gets the same
-- KEYS, all under one queue's hash tag, so each script touches a single Redis Cluster slot:
--   seq         string  last sequence number given out
--   messages    hash    seq -> envelope JSON (message id, body, properties, enqueued time)
--   ready       zset    seq, scored by seq: available now, oldest first
--   scheduled   zset    seq, scored by the enqueue time (ms) it waits for
--   locked      zset    seq, scored by the time (ms) its lock expires
--   deliveries  hash    seq -> delivery count; (seq, count) is the lock token
--   dead        zset    seq, scored by seq: the dead-letter sub-queue
--   reasons     hash    seq -> {"reason", "description"} of a dead letter
--   seen        zset    message id, scored by when it was last sent (duplicate detection)
--   signal      list    a token per send, so a waiting receiver wakes at once
-- Time is the server's (TIME), never a client's clock, so every bridge agrees on lock expiry.
local K_SEQ, K_MESSAGES, K_READY, K_SCHEDULED, K_LOCKED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_DELIVERIES, K_DEAD, K_REASONS, K_SEEN, K_SIGNAL = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- Tokens kept in the signal list: enough to wake every receiver of one queue.
local MAX_SIGNALS = 8

local function wake_receivers()
  redis.call('RPUSH', K_SIGNAL, 1)
  redis.call('LTRIM', K_SIGNAL, 0, MAX_SIGNALS - 1)
end

local function dead_letter(seq, reason, description)
  redis.call('ZREM', K_LOCKED, seq)
  redis.call('ZADD', K_DEAD, seq, seq)
  redis.call('HSET', K_REASONS, seq, cjson.encode({reason = reason, description = description}))
end

-- A lock ended unsettled (abandoned, or expired): deliver again, or dead-letter when spent.
local function release(seq, max_deliveries)
  redis.call('ZREM', K_LOCKED, seq)
  local deliveries = tonumber(redis.call('HGET', K_DELIVERIES, seq) or '0')
  if deliveries >= max_deliveries then
    dead_letter(seq, 'MaxDeliveryCountExceeded',
      'Message could not be consumed after ' .. deliveries .. ' delivery attempts.')
  else
    redis.call('ZADD', K_READY, seq, seq)
  end
end

-- Whoever received delivery number `delivery` of `seq` holds its lock until the lock expires.
local function holds_lock(seq, delivery)
  local expires = redis.call('ZSCORE', K_LOCKED, seq)
  return expires ~= false and tonumber(expires) > now_ms
    and redis.call('HGET', K_DELIVERIES, seq) == delivery
end
