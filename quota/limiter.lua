--[[ limiter.lua: one atomic quota step for one pool+deployment (called with EVALSHA).

One script with five operations (ARGV[1]) rather than five scripts, and so longer than the 10-50
lines a script usually gets: Redis Lua has no includes, and every operation first moves the same
sliding window to the server's clock. Keeping that arithmetic in one place is what makes acquire,
report, release, observe and status agree on what "in the window" means.

The window is WINDOW buckets wide (60) plus the current bucket; requests are also limited over the
last SUB buckets (10, a sixth, as Azure enforces RPM/6 per 10 s). Counting one bucket more than the
window is deliberate: every window of the configured length ending now lies inside it, so no such
window can ever hold more than the limit. Totals are kept running, so a call costs O(1) Redis
commands, plus O(buckets) when a bucket leaves the window or a refusal computes its retry time.

KEYS (all carry the hash tag {pool:deployment}, so the script is Redis-Cluster-safe)
  1 state   hash: "<bucket>:t" / "<bucket>:r" tokens and requests charged in a bucket,
            "<bucket>:t:<app>" / "<bucket>:r:<app>" the same per app, "<bucket>:apps" the apps
            charged there ("a,b,"), and the running totals listed in save() below
  2 locks   hash: lock id -> "<bucket>|<tokens>|<app>|<expires_us>", or a "done"/"expired" tombstone
  3 expiry  zset: lock id scored by when its lock expires or its tombstone is purged (µs)
  4 limits  hash: tpm, rpm set at run time; a missing field falls back to the ARGV default

ARGV (times in microseconds of server time)
  1 op: acquire | report | release | observe | status      5 lock_ttl_us
  2 bucket_us    3 window_buckets (WINDOW)   4 sub_buckets (SUB)
  6 default_tpm (0: no token limit, Whisper)   7 default_rpm
  8.. acquire: tokens, app | report: lock id, actual tokens, charge model ("azure" | "usage")
      release: lock id | observe: remaining tokens, remaining requests (-1: not reported)

Returns, each starting with the server time used, `now`:
  acquire  {now, 1, lock_id}  or  {now, 0, retry_after_us, kind, used, limit}
           kind: "too_large" (never fits: retry_after_us = -1), "tokens", "requests", "sub_requests"
  report, release  {now, 1, extra_tokens_charged, tokens_refunded}  or  {now, 0, why}
           why: "unknown", "done" (already reported or released), "expired"
  observe  {now, 1, external_tokens_charged, external_requests_charged}
  status   {now, tpm, rpm, sub_rpm, tokens, requests, sub_requests, locked_tokens,
            locked_requests, <state hash as HGETALL>}
]]
local state, locks, expiry, limits = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local bucket_us = tonumber(ARGV[2])
local WINDOW = tonumber(ARGV[3])
local SUB = tonumber(ARGV[4])
local lock_ttl_us = tonumber(ARGV[5])
local default_tpm = tonumber(ARGV[6])
local default_rpm = tonumber(ARGV[7])

-- Lua turns numbers into strings with 14 significant digits; µs timestamps have 16.
local function int(x) return string.format('%d', x) end
local function field(bucket, name) return int(bucket) .. ':' .. name end
local function number(value) return tonumber(value) or 0 end

local OPERATIONS = {acquire = true, report = true, release = true, observe = true, status = true}
if not OPERATIONS[op] then
  return redis.error_reply('CONDUIT unknown quota operation ' .. tostring(op))
end

local meta = redis.call('HMGET', state, 'clock', 'head', 'tokens', 'requests', 'sub_requests',
  'locked_tokens', 'locked_requests', 'bucket_us')
if meta[8] and tonumber(meta[8]) ~= bucket_us then
  return redis.error_reply('CONDUIT quota window mismatch: this pool counts in buckets of '
    .. meta[8] .. ' us, the caller in ' .. int(bucket_us) .. ' us; every process must use the same'
    .. ' QUOTA_WINDOW_SECONDS')
end
-- Server time, never earlier than a time this pool already counted: a clock stepped back must
-- not reopen buckets that were full.
local time = redis.call('TIME')
local now = math.max(tonumber(time[1]) * 1000000 + tonumber(time[2]), number(meta[1]))
local head = number(meta[2])
local tokens, requests, sub_requests = number(meta[3]), number(meta[4]), number(meta[5])
local locked_tokens, locked_requests = number(meta[6]), number(meta[7])
local current = math.floor(now / bucket_us)

local configured = redis.call('HMGET', limits, 'tpm', 'rpm')
local tpm = tonumber(configured[1]) or default_tpm
local rpm = tonumber(configured[2]) or default_rpm
local sub_rpm = math.max(1, math.floor(rpm * SUB / WINDOW))

local function save()
  redis.call('HSET', state, 'clock', int(now), 'head', int(head), 'tokens', int(tokens),
    'requests', int(requests), 'sub_requests', int(sub_requests),
    'locked_tokens', int(locked_tokens), 'locked_requests', int(locked_requests),
    'bucket_us', int(bucket_us))
end

-- Charge (or, negative, refund) a bucket that is still in the window, for the pool and the app.
local function add(bucket, app, token_count, request_count)
  if redis.call('HEXISTS', state, field(bucket, 't:' .. app)) == 0 then
    local apps = redis.call('HGET', state, field(bucket, 'apps')) or ''
    redis.call('HSET', state, field(bucket, 'apps'), apps .. app .. ',')
  end
  -- int(): a refund of 0 tokens is -0 in Lua, which Redis does not take as an integer.
  redis.call('HINCRBY', state, field(bucket, 't'), int(token_count))
  redis.call('HINCRBY', state, field(bucket, 'r'), int(request_count))
  redis.call('HINCRBY', state, field(bucket, 't:' .. app), int(token_count))
  redis.call('HINCRBY', state, field(bucket, 'r:' .. app), int(request_count))
  tokens = tokens + token_count
  requests = requests + request_count
  if bucket >= current - SUB then sub_requests = sub_requests + request_count end
end

-- A bucket left the window: its charges stop counting and its fields go.
local function evict(bucket)
  local counts = redis.call('HMGET', state, field(bucket, 't'), field(bucket, 'r'),
    field(bucket, 'apps'))
  tokens = tokens - number(counts[1])
  requests = requests - number(counts[2])
  local gone = {field(bucket, 't'), field(bucket, 'r'), field(bucket, 'apps')}
  for app in string.gmatch(counts[3] or '', '[^,]+') do
    gone[#gone + 1] = field(bucket, 't:' .. app)
    gone[#gone + 1] = field(bucket, 'r:' .. app)
  end
  redis.call('HDEL', state, unpack(gone))
end

local function tombstone(id, why)
  redis.call('HSET', locks, id, why)
  redis.call('ZADD', expiry, int(now + WINDOW * bucket_us), id)
end

local function parse_lock(record)
  local bucket, token_count, app, expires = string.match(record, '^(%d+)|(%d+)|([^|]*)|(%d+)$')
  return {bucket = tonumber(bucket), tokens = tonumber(token_count), app = app,
          expires = tonumber(expires)}
end

-- A lock stops being "locked" when it finishes or expires; its charge stays in its bucket.
local function unlock(id, lock, why)
  locked_tokens = math.max(0, locked_tokens - lock.tokens)
  locked_requests = math.max(0, locked_requests - 1)
  tombstone(id, why)
end

-- Expire overdue locks (they stay spent) and purge tombstones older than a window.
local function sweep()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', int(now))) do
    local record = redis.call('HGET', locks, id)
    if record and record ~= 'done' and record ~= 'expired' then
      unlock(id, parse_lock(record), 'expired')
    else
      redis.call('HDEL', locks, id)
      redis.call('ZREM', expiry, id)
    end
  end
end

-- Move the window to the current bucket.
if head > 0 and current > head then
  for bucket = head - SUB, math.min(head, current - SUB - 1) do
    sub_requests = sub_requests - number(redis.call('HGET', state, field(bucket, 'r')))
  end
  for bucket = head - WINDOW, math.min(head, current - WINDOW - 1) do evict(bucket) end
  sweep()
end
head = math.max(head, current)

-- How long until enough of the `name` charges ("t" or "r") left the last `span` buckets to free
-- `excess`: the bucket where the running sum reaches it leaves at (bucket + span + 1) * bucket_us.
local function wait_for(excess, name, span)
  local freed = 0
  for bucket = current - span, current do
    freed = freed + number(redis.call('HGET', state, field(bucket, name)))
    if freed >= excess then return (bucket + span + 1) * bucket_us - now end
  end
  return (current + span + 1) * bucket_us - now
end

local function find_lock(id)
  local record = redis.call('HGET', locks, id)
  if not record then return nil, 'unknown' end
  if record == 'done' or record == 'expired' then return nil, record end
  local lock = parse_lock(record)
  if lock.expires <= now then
    unlock(id, lock, 'expired')
    return nil, 'expired'
  end
  return lock
end

local function acquire(wanted, app)
  if tpm > 0 and wanted > tpm then return {now, 0, -1, 'too_large', tokens, tpm} end
  local wait, refusal = 0, nil
  local function refuse(kind, used, limit, excess, name, span)
    wait = math.max(wait, wait_for(excess, name, span))
    refusal = refusal or {kind, used, limit}
  end
  if tpm > 0 and tokens + wanted > tpm then
    refuse('tokens', tokens, tpm, tokens + wanted - tpm, 't', WINDOW)
  end
  if requests + 1 > rpm then refuse('requests', requests, rpm, requests + 1 - rpm, 'r', WINDOW) end
  if sub_requests + 1 > sub_rpm then
    refuse('sub_requests', sub_requests, sub_rpm, sub_requests + 1 - sub_rpm, 'r', SUB)
  end
  if refusal then return {now, 0, wait, refusal[1], refusal[2], refusal[3]} end

  local id = redis.call('HINCRBY', state, 'seq', 1)
  local expires = now + lock_ttl_us
  add(current, app, wanted, 1)
  locked_tokens = locked_tokens + wanted
  locked_requests = locked_requests + 1
  redis.call('HSET', locks, id, string.format('%d|%d|%s|%d', current, wanted, app, expires))
  redis.call('ZADD', expiry, int(expires), id)
  return {now, 1, id}
end

-- Usage beyond the estimate is charged now; a refund only reaches a bucket still in the window,
-- so a late refund never creates capacity that did not exist.
local function settle(id, actual, model)
  local lock, why = find_lock(id)
  if not lock then return {now, 0, why} end
  local extra, refunded = actual - lock.tokens, 0
  if extra > 0 then
    add(current, lock.app, extra, 0)
  elseif extra < 0 and model == 'usage' and lock.bucket >= current - WINDOW then
    add(lock.bucket, lock.app, extra, 0)
    refunded = -extra
  end
  unlock(id, lock, 'done')
  return {now, 1, math.max(extra, 0), refunded}
end

-- A call that never reached upstream gives back its tokens and its request.
local function release(id)
  local lock, why = find_lock(id)
  if not lock then return {now, 0, why} end
  local refunded = 0
  if lock.bucket >= current - WINDOW then
    add(lock.bucket, lock.app, -lock.tokens, -1)
    refunded = lock.tokens
  end
  unlock(id, lock, 'done')
  return {now, 1, 0, refunded}
end

-- Upstream (other clients of a shared deployment) has spent what we did not see: charge the
-- difference as external usage now. Never a refund: upstream may count in another window.
local function observe(remaining_tokens, remaining_requests)
  local external_tokens, external_requests = 0, 0
  if remaining_tokens >= 0 and tpm > 0 then
    external_tokens = math.max(0, tpm - tokens - remaining_tokens)
  end
  if remaining_requests >= 0 then
    external_requests = math.max(0, rpm - requests - remaining_requests)
  end
  if external_tokens > 0 or external_requests > 0 then
    add(current, '(external)', external_tokens, external_requests)
  end
  return {now, 1, external_tokens, external_requests}
end

local result
if op == 'acquire' then
  result = acquire(tonumber(ARGV[8]), ARGV[9])
elseif op == 'report' then
  result = settle(ARGV[8], tonumber(ARGV[9]), ARGV[10])
elseif op == 'release' then
  result = release(ARGV[8])
elseif op == 'observe' then
  result = observe(tonumber(ARGV[8]), tonumber(ARGV[9]))
else
  sweep()
  result = {now, tpm, rpm, sub_rpm, tokens, requests, sub_requests, locked_tokens, locked_requests,
            redis.call('HGETALL', state)}
end
save()
return result
