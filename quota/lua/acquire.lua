--[[ acquire.lua: lock tokens and one request on the first deployment of a model with room, or
refuse with the exact wait until one has.

Deployments are weighed in the order given (the model's spill-over order); the first with room
takes the charge. When none has, the refusal is the one that clears soonest. On each deployment a
request must fit, in this order:
  - no cool-down: the upstream answered 429 or 5xx lately (settle.lua's reject sets it);
  - the deployment's limits, less the interactive reserve for a batch request while interactive
    work was seen within the idle time (the reserve is the last `reserve` of each window, so an
    interactive request always finds room behind a saturating batch);
  - the app's share of the limits, when it has one (QUOTA_APP_SHARES).

KEYS  state, locks, expiry of each deployment, in spill-over order (see the prelude)
ARGV  2 tokens, 3 app, 4 "lane reserve_ppm idle_us share_ppm" (lane "i" interactive or "b" batch;
      share_ppm 0: the app has no share), 5.. "default_tpm default_rpm" of each deployment
      (default_tpm 0: no token limit, Whisper)
Returns {now, 1, lock_id, k}  or  {now, 0, retry_after_us, kind, used, limit, k, detail}
  k: which deployment (1-based); kind: "too_large" (never fits: retry_after_us = -1), "tokens",
  "requests", "sub_requests", "cooldown"; detail: "" or "reserve" (held back for interactive
  work) or "share" (the app's share, used and limit are the app's)
]]
local wanted, app = tonumber(ARGV[2]), ARGV[3]
local lane, reserve_text, idle_text, share_text =
  string.match(ARGV[4], '^([ib]) (%d+) (%d+) (%d+)$')
if not lane then return redis.error_reply('CONDUIT bad quota call: acquire ' .. ARGV[4]) end
local interactive = lane == 'i'
local reserve_ppm, idle_us, share_ppm =
  tonumber(reserve_text), tonumber(idle_text), tonumber(share_text)
-- The app as booked in either lane: shares count both.
local base_app = interactive and string.sub(app, 1, -3) or app

local function part(limit, ppm) return math.floor(limit * ppm / 1000000) end

-- The app's charges per bucket in the window (index 1: the oldest bucket, current - SPAN), both
-- lanes: one HMGET of the closed buckets' fields plus the open bucket in memory.
local function app_buckets()
  local names, interactive_app = {}, base_app .. '!i'
  for bucket = current - SPAN, current - 1 do
    local prefix = int(bucket) .. ':'
    names[#names + 1] = prefix .. 't:' .. base_app
    names[#names + 1] = prefix .. 'r:' .. base_app
    names[#names + 1] = prefix .. 't:' .. interactive_app
    names[#names + 1] = prefix .. 'r:' .. interactive_app
  end
  local values = redis.call('HMGET', state, unpack(names))
  local per_tokens, per_requests = {}, {}
  for i = 1, #values, 4 do
    per_tokens[#per_tokens + 1] = number(values[i]) + number(values[i + 2])
    per_requests[#per_requests + 1] = number(values[i + 1]) + number(values[i + 3])
  end
  local batch, lane_i = open[base_app] or {0, 0}, open[interactive_app] or {0, 0}
  per_tokens[#per_tokens + 1] = batch[1] + lane_i[1]
  per_requests[#per_requests + 1] = batch[2] + lane_i[2]
  return per_tokens, per_requests
end

local function sum(values)
  local total = 0
  for _, value in ipairs(values) do total = total + value end
  return total
end

-- When enough of the app's charges left the window to free `excess`.
local function app_wait(per_bucket, excess)
  local freed = 0
  for i, count in ipairs(per_bucket) do
    freed = freed + count
    -- bucket current - SPAN + i - 1 leaves the window SPAN + 1 buckets later
    if freed >= excess then return (current + i) * bucket_us - now end
  end
  return (current + SPAN + 1) * bucket_us - now
end

-- When batch may use the reserve again: interactive work idle for idle_us.
local interactive_at = 0

-- The refusal of the loaded deployment, or nil when the request fits there.
local function weigh()
  if cool > now then return {cool - now, 'cooldown', 0, 0, ''} end
  if tpm > 0 and wanted > tpm then return {-1, 'too_large', tokens, tpm, ''} end
  local reserved = not interactive and reserve_ppm > 0 and now - interactive_at < idle_us
  local wait, refusal = 0, nil
  -- `need` more of what `used` counts against `limit` (reduced by the reserve) or `full` (not).
  local function refuse(kind, used, need, limit, full, name, span)
    local this = wait_for(used + need - limit, name, span)
    local reserve_only = used + need <= full
    -- Held back only by the reserve: it also clears when interactive work goes idle.
    if reserve_only then this = math.min(this, interactive_at + idle_us - now) end
    wait = math.max(wait, this)
    refusal = refusal or {kind, used, limit, reserve_only and 'reserve' or ''}
  end
  local token_limit, request_limit, sub_limit = tpm, rpm, sub_rpm
  if reserved then
    token_limit = tpm - part(tpm, reserve_ppm)
    request_limit = rpm - part(rpm, reserve_ppm)
    sub_limit = sub_rpm - part(sub_rpm, reserve_ppm)
  end
  if tpm > 0 and tokens + wanted > token_limit then
    refuse('tokens', tokens, wanted, token_limit, tpm, 't', SPAN)
  end
  if requests + 1 > request_limit then
    refuse('requests', requests, 1, request_limit, rpm, 'r', SPAN)
  end
  if sub_requests + 1 > sub_limit then
    refuse('sub_requests', sub_requests, 1, sub_limit, sub_rpm, 'r', SUB_SPAN)
  end
  if refusal then return {wait, refusal[1], refusal[2], refusal[3], refusal[4]} end

  if share_ppm > 0 then
    local share_tokens, share_requests = part(tpm, share_ppm), math.max(1, part(rpm, share_ppm))
    if tpm > 0 and wanted > share_tokens then
      return {-1, 'too_large', 0, share_tokens, 'share'}
    end
    local per_tokens, per_requests = app_buckets()
    local app_tokens, app_requests = sum(per_tokens), sum(per_requests)
    if tpm > 0 and app_tokens + wanted > share_tokens then
      wait = app_wait(per_tokens, app_tokens + wanted - share_tokens)
      refusal = {'tokens', app_tokens, share_tokens, 'share'}
    end
    if app_requests + 1 > share_requests then
      wait = math.max(wait, app_wait(per_requests, app_requests + 1 - share_requests))
      refusal = refusal or {'requests', app_requests, share_requests, 'share'}
    end
    if refusal then return {wait, refusal[1], refusal[2], refusal[3], refusal[4]} end
  end
  return nil
end

local function admit(k)
  seq = seq + 1
  local id = int(seq)
  local expires = now + lock_ttl_us
  add(current, app, wanted, 1)
  locked_tokens = locked_tokens + wanted
  locked_requests = locked_requests + 1
  redis.call('HSET', locks, id, string.format('%d|%d|%s|%d', current, wanted, app, expires))
  redis.call('ZADD', expiry, int(expires), id)
  return {now, 1, id, k}
end

local best, result = nil, nil
for k = 1, #ARGV - 4 do
  local default_tpm, default_rpm = string.match(ARGV[4 + k], '^(%d+) (%d+)$')
  local problem = load(k, tonumber(default_tpm), tonumber(default_rpm))
  if problem then return redis.error_reply(problem) end
  if k == 1 then
    interactive_at = tonumber(stored[7]) or 0
    -- Interactive work asking (admitted or not) keeps the reserve held back from batch.
    if interactive then redis.call('HSET', state, 'interactive', int(now)) end
  end
  local refusal = weigh()
  if not refusal then
    result = admit(k)
    save()
    break
  end
  save()
  -- The refusal that clears soonest; one that never fits only when all never fit.
  if not best or (best[1] < 0 and refusal[1] >= 0)
      or (refusal[1] >= 0 and refusal[1] < best[1]) then
    best = refusal
    best[6] = k
  end
end
if result then return result end
return {now, 0, best[1], best[2], best[3], best[4], best[6], best[5]}
