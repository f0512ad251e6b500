--[[ prelude.lua: the window arithmetic every quota script shares (quota/scripts.py prepends it).

Redis Lua has no includes, so each operation's script is this prelude followed by the operation
(acquire.lua, settle.lua, observe.lua, status.lua), joined at load time, as bridge/lua does.

The window is WINDOW buckets wide (QUOTA_WINDOW_BUCKETS, 60) plus the current bucket; requests are
also limited over the last SUB buckets (a sixth, as Azure enforces RPM/6 per 10 s). Counting one bucket more than the
window is deliberate: every window of the configured length ending now lies inside it, so no such
window can ever hold more than the limit. A charge also stays counted a margin of buckets longer
(SPAN, SUB_SPAN): we count it from when it is locked, the upstream from when the request arrives,
up to the margin later, so our window must reach back that much further to cover every upstream
window that can hold the charge. Totals are kept running, so a call costs O(1) Redis commands
(five for an acquire) and Lua work in the apps charged in the open bucket, plus O(buckets) when a
bucket leaves the window or a refusal computes its retry time.

Every Redis command a script makes costs about as much as a small decision, so a decision makes
few: the newest ("open") bucket travels with the running totals in the fields read and written
once per call, and becomes fields of its own only when time moves past it; the limits share the
state hash; the constant settings arrive as one argument.

KEYS: three per deployment (1-3 the first, 4-6 the second ...), all carrying one hash tag per
pool+model, so a script touches one Redis Cluster slot however many deployments it weighs:
  state   hash: "totals" (see TOTALS); "open" the newest bucket's charges per app
          ("app tokens requests;..."); for each older bucket in the window "<bucket>:t" /
          "<bucket>:r" tokens and requests, "<bucket>:t:<app>" / "<bucket>:r:<app>" per app,
          "<bucket>:apps" its apps ("a,b"); "layout" the "bucket_us margin_buckets" this pool
          counts in; "tpm", "rpm" limits set at run time (absent: the defaults the caller sends);
          "cool" until when (µs) the deployment is skipped after the upstream refused or failed;
          "interactive" when an interactive acquire last asked (kept on the model's first
          deployment, which every acquire of the model loads); "leased" the tokens and requests
          leases hold ungranted and until when (µs) the latest may hold them ("t r until");
          "gone" the tokens and requests
          of the buckets that left the window lately ("bucket:tokens:requests,..."), kept a
          window and margin (KEEP buckets) after they left, so observe can count what was in
          the window when a request was sent
          An app charged in the interactive lane is booked as "<app>!i", in the batch lane as
          "<app>", so status can show use per lane and per app from the same counts.
  locks   hash: lock id -> "<bucket>|<tokens>|<app>|<expires_us>" (one request), or
          "<bucket>|<tokens>|<app>|<expires_us>|<requests>" (a lease: room for a process to
          grant from, see acquire.lua; the tokens and requests it still holds), or a "done"/"expired" tombstone. A lease's grants are
          locks of their own, "<lease id>.<n>", carved out of it (settle.lua)
  expiry  zset: lock id scored by when its lock expires or its tombstone is purged (µs)

ARGV[1] is "bucket_us window_buckets sub_buckets margin_buckets lock_ttl_us", space-separated;
each operation documents the rest. Times are microseconds of server time.
]]
local LAYOUT = '^(%d+) (%d+) (%d+) (%d+) (%d+)$'
local bucket_text, window_text, sub_text, margin_text, ttl_text = string.match(ARGV[1], LAYOUT)
if not bucket_text then
  return redis.error_reply('CONDUIT bad quota call: ' .. tostring(ARGV[1]))
end
local bucket_us = tonumber(bucket_text)
local WINDOW = tonumber(window_text)
local SUB = tonumber(sub_text)
local lock_ttl_us = tonumber(ttl_text)
-- How many buckets before the current one a charge still counts: the window, then the margin.
local SPAN = WINDOW + tonumber(margin_text)
local SUB_SPAN = SUB + tonumber(margin_text)
-- How long (buckets) a bucket that left the window is remembered in "gone": an answer's headers
-- are weighed against the window as it was when its request was sent, up to this long before.
local KEEP = SPAN
-- Processes that disagree on either would evict each other's buckets early or late.
local layout = bucket_text .. ' ' .. margin_text
-- TOTALS: last time counted, the open bucket, tokens, requests and sub-window requests in the
-- window, tokens and requests locked, last lock id.
local TOTALS = '^(%d+) (%d+) (-?%d+) (-?%d+) (-?%d+) (-?%d+) (-?%d+) (%d+)$'

-- Lua turns numbers into strings with 14 significant digits; µs timestamps have 16.
local function int(x) return string.format('%d', x) end
local function number(value) return tonumber(value) or 0 end

local server_time = redis.call('TIME')
server_time = tonumber(server_time[1]) * 1000000 + tonumber(server_time[2])

-- The deployment being weighed: load() fills these from its keys, save() writes them back.
local state, locks, expiry, stored, cool
local head, tokens, requests, sub_requests, locked_tokens, locked_requests, seq
-- What leases hold ungranted (part of locked_*), and until when the latest may hold it.
local leased_tokens, leased_requests, leased_until
local now, current, tpm, rpm, sub_rpm
-- The open bucket (`head`): app -> {tokens, requests}, and its apps in the order first charged.
local open, open_apps

local function open_total(index)  -- 1: tokens, 2: requests
  local sum = 0
  for _, app in ipairs(open_apps) do sum = sum + open[app][index] end
  return sum
end

local function serialized_open()
  local parts = {}
  for _, app in ipairs(open_apps) do
    parts[#parts + 1] = string.format('%s %d %d', app, open[app][1], open[app][2])
  end
  return table.concat(parts, ';')
end

local function save()
  redis.call('HSET', state, 'open', serialized_open(), 'totals', string.format(
    '%d %d %d %d %d %d %d %d', now, head, tokens, requests, sub_requests, locked_tokens,
    locked_requests, seq), 'leased', string.format('%d %d %d', leased_tokens, leased_requests,
    leased_until))
  if not stored[3] then redis.call('HSET', state, 'layout', layout) end
end

-- Time moved past the open bucket: write it out as fields of its own.
local function close_open_bucket()
  if #open_apps == 0 then return end
  local prefix = int(head) .. ':'
  local fields = {prefix .. 't', int(open_total(1)), prefix .. 'r', int(open_total(2)),
                  prefix .. 'apps', table.concat(open_apps, ',')}
  for _, app in ipairs(open_apps) do
    fields[#fields + 1] = prefix .. 't:' .. app
    fields[#fields + 1] = int(open[app][1])
    fields[#fields + 1] = prefix .. 'r:' .. app
    fields[#fields + 1] = int(open[app][2])
  end
  redis.call('HSET', state, unpack(fields))
  open, open_apps = {}, {}
end

-- What a bucket in the window holds: "t" tokens or "r" requests.
local function bucket_count(bucket, name)
  if bucket == head then return open_total(name == 't' and 1 or 2) end
  return number(redis.call('HGET', state, int(bucket) .. ':' .. name))
end

-- Charge (or, negative, refund) a bucket that is still in the window, for the pool and the app.
-- Only refunds reach a closed bucket, and only for an app charged there.
local function add(bucket, app, token_count, request_count)
  if bucket == head then
    local usage = open[app]
    if not usage then
      usage = {0, 0}
      open[app] = usage
      open_apps[#open_apps + 1] = app
    end
    usage[1] = usage[1] + token_count
    usage[2] = usage[2] + request_count
  else
    local prefix = int(bucket) .. ':'
    -- int(): a refund of 0 tokens is -0 in Lua, which Redis does not take as an integer.
    local token_text, request_text = int(token_count), int(request_count)
    redis.call('HINCRBY', state, prefix .. 't', token_text)
    redis.call('HINCRBY', state, prefix .. 'r', request_text)
    redis.call('HINCRBY', state, prefix .. 't:' .. app, token_text)
    redis.call('HINCRBY', state, prefix .. 'r:' .. app, request_text)
  end
  tokens = tokens + token_count
  requests = requests + request_count
  if bucket >= current - SUB_SPAN then sub_requests = sub_requests + request_count end
end

-- A bucket left the window: its charges stop counting and its fields go. Returns its tokens and
-- requests, for "gone".
local function evict(bucket)
  local prefix = int(bucket) .. ':'
  local counts = redis.call('HMGET', state, prefix .. 't', prefix .. 'r', prefix .. 'apps')
  local token_count, request_count = number(counts[1]), number(counts[2])
  tokens = tokens - token_count
  requests = requests - request_count
  local fields = {prefix .. 't', prefix .. 'r', prefix .. 'apps'}
  for app in string.gmatch(counts[3] or '', '[^,]+') do
    fields[#fields + 1] = prefix .. 't:' .. app
    fields[#fields + 1] = prefix .. 'r:' .. app
  end
  redis.call('HDEL', state, unpack(fields))
  return token_count, request_count
end

-- The buckets that left the window in the last KEEP buckets: bucket -> {tokens, requests}.
local GONE = '(%d+):(%-?%d+):(%-?%d+)'
local function gone_buckets()
  local gone = {}
  for bucket, t, r in string.gmatch(redis.call('HGET', state, 'gone') or '', GONE) do
    gone[tonumber(bucket)] = {tonumber(t), tonumber(r)}
  end
  return gone
end

-- Remember the buckets that just left (`left`: "bucket:tokens:requests" entries), forgetting
-- those that left more than KEEP buckets ago.
local function remember_gone(left)
  local kept, oldest = {}, current - SPAN - KEEP
  for entry, bucket in string.gmatch(redis.call('HGET', state, 'gone') or '', '((%d+):[^,]+)') do
    if tonumber(bucket) >= oldest then kept[#kept + 1] = entry end
  end
  for _, entry in ipairs(left) do kept[#kept + 1] = entry end
  redis.call('HSET', state, 'gone', table.concat(kept, ','))
end

local function tombstone(id, why)
  redis.call('HSET', locks, id, why)
  redis.call('ZADD', expiry, int(now + WINDOW * bucket_us), id)
end

local function parse_lock(record)
  local bucket, token_count, app, expires, request_count =
    string.match(record, '^(%d+)|(%d+)|([^|]*)|(%d+)|?(%d*)$')
  local lease = request_count ~= ''
  return {bucket = tonumber(bucket), tokens = tonumber(token_count), app = app,
          expires = tonumber(expires), requests = lease and tonumber(request_count) or 1,
          lease = lease}
end

local function write_lock(id, lock)
  local record = string.format('%d|%d|%s|%d', lock.bucket, lock.tokens, lock.app, lock.expires)
  if lock.lease then record = record .. '|' .. int(lock.requests) end
  redis.call('HSET', locks, id, record)
end

-- What leases hold ungranted changes by `token_count` and `request_count`.
local function lease_room(token_count, request_count)
  leased_tokens = math.max(0, leased_tokens + token_count)
  leased_requests = math.max(0, leased_requests + request_count)
end

-- A lock stops being "locked" when it finishes or expires; its charge stays in its bucket.
local function unlock(id, lock, why)
  locked_tokens = math.max(0, locked_tokens - lock.tokens)
  locked_requests = math.max(0, locked_requests - lock.requests)
  if lock.lease then lease_room(-lock.tokens, -lock.requests) end
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

-- Make deployment `k` (its KEYS 3k-2 .. 3k) the one weighed, with the window moved to now.
-- Returns an error message when this process counts in another layout than the pool.
local function load(k, default_tpm, default_rpm)
  state, locks, expiry = KEYS[3 * k - 2], KEYS[3 * k - 1], KEYS[3 * k]
  stored = redis.call('HMGET', state, 'totals', 'open', 'layout', 'tpm', 'rpm', 'cool',
    'interactive', 'leased')
  if stored[3] and stored[3] ~= layout then
    return 'CONDUIT quota window mismatch: this pool counts in "' .. stored[3]
      .. '" (bucket us, margin buckets), the caller in "' .. layout .. '"; every process must'
      .. ' use the same QUOTA_WINDOW_SECONDS, QUOTA_WINDOW_BUCKETS and'
      .. ' QUOTA_UPSTREAM_MARGIN_SECONDS'
  end
  local clock
  clock, head, tokens, requests, sub_requests, locked_tokens, locked_requests, seq =
    string.match(stored[1] or '0 0 0 0 0 0 0 0', TOTALS)
  head, tokens, requests, sub_requests = tonumber(head), tonumber(tokens), tonumber(requests),
    tonumber(sub_requests)
  locked_tokens, locked_requests, seq = tonumber(locked_tokens), tonumber(locked_requests),
    tonumber(seq)
  -- Server time, never earlier than a time this pool already counted: a clock stepped back must
  -- not reopen buckets that were full.
  now = math.max(server_time, tonumber(clock))
  current = math.floor(now / bucket_us)
  tpm = tonumber(stored[4]) or default_tpm
  rpm = tonumber(stored[5]) or default_rpm
  sub_rpm = math.max(1, math.floor(rpm * SUB / WINDOW))
  cool = tonumber(stored[6]) or 0
  leased_tokens, leased_requests, leased_until = string.match(stored[8] or '0 0 0',
    '^(%d+) (%d+) (%d+)$')
  leased_tokens, leased_requests, leased_until = tonumber(leased_tokens),
    tonumber(leased_requests), tonumber(leased_until)

  open, open_apps = {}, {}
  for app, t, r in string.gmatch(stored[2] or '', '([^ ;]+) (%-?%d+) (%-?%d+)') do
    open[app] = {tonumber(t), tonumber(r)}
    open_apps[#open_apps + 1] = app
  end

  -- Move the window to the current bucket.
  if current > head then
    local previous = head
    close_open_bucket()
    head = current
    if previous > 0 then
      for bucket = previous - SUB_SPAN, math.min(previous, current - SUB_SPAN - 1) do
        sub_requests = sub_requests - bucket_count(bucket, 'r')
      end
      local left = {}
      for bucket = previous - SPAN, math.min(previous, current - SPAN - 1) do
        local token_count, request_count = evict(bucket)
        if token_count ~= 0 or request_count ~= 0 then
          left[#left + 1] = string.format('%s:%d:%d', int(bucket), token_count, request_count)
        end
      end
      if #left > 0 then remember_gone(left) end
      sweep()
    end
  end
  return nil
end

-- How long until enough of the `name` charges ("t" or "r") left the last `span` buckets to free
-- `excess`: the bucket where the running sum reaches it leaves at (bucket + span + 1) * bucket_us.
local function wait_for(excess, name, span)
  local freed = 0
  for bucket = current - span, current do
    freed = freed + bucket_count(bucket, name)
    if freed >= excess then return (bucket + span + 1) * bucket_us - now end
  end
  return (current + span + 1) * bucket_us - now
end

-- Skip this deployment until `until_us` (never shortening a cool-down already set).
local function cool_down(until_us)
  if until_us > cool then
    cool = until_us
    redis.call('HSET', state, 'cool', int(cool))
  end
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
