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

A caller may also ask for a lease (quota/leases.py): room for `lease_requests` more requests and
`lease_tokens` more tokens, charged now with the request, which its process then grants from
without asking Redis, and gives back (settle.lua's release) when it stops granting. A lease takes at
most an eighth of the room left after the request (LEASE_PART), of each limit the request was
weighed against, so it never holds back most of what others could use, and shrinks to nothing as
the window fills: near the limit every decision is made here again, one request at a time. An app
with a share gets no lease. A request refused only because leases hold room is told to retry
when the latest lease may stop holding it (its process gives back what it did not grant).

KEYS  state, locks, expiry of each deployment, in spill-over order (see the prelude)
ARGV  2 tokens, 3 app, 4 "lane reserve_ppm idle_us share_ppm lease_requests lease_tokens
      lease_hold_us" (lane "i" interactive or "b" batch; share_ppm 0: the app has no share;
      lease_requests 0: no lease; lease_hold_us: how long a lease may hold its room), 5.. "default_tpm default_rpm" of each deployment (default_tpm 0: no token limit,
      Whisper)
Returns {now, 1, lock_id, k, lease_id, lease_requests, lease_tokens} (lease_id 0: no lease)  or
        {now, 0, retry_after_us, kind, used, limit, k, detail}
  k: which deployment (1-based); kind: "too_large" (never fits: retry_after_us = -1), "tokens",
  "requests", "sub_requests", "cooldown"; detail: "" or "reserve" (held back for interactive
  work) or "share" (the app's share, used and limit are the app's)
]]
local wanted, app = tonumber(ARGV[2]), ARGV[3]
local lane, reserve_text, idle_text, share_text, lease_requests_text, lease_tokens_text,
  lease_hold_text = string.match(ARGV[4], '^([ib]) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
if not lane then return redis.error_reply('CONDUIT bad quota call: acquire ' .. ARGV[4]) end
local interactive = lane == 'i'
local reserve_ppm, idle_us, share_ppm =
  tonumber(reserve_text), tonumber(idle_text), tonumber(share_text)
local lease_requests, lease_tokens, lease_hold_us =
  tonumber(lease_requests_text), tonumber(lease_tokens_text), tonumber(lease_hold_text)
-- A lease takes at most this part of the room left (1/LEASE_PART).
local LEASE_PART = 8
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
-- The limits the last weigh() held the request to (less the reserve for batch when it applies).
local token_limit, request_limit, sub_limit

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
  token_limit, request_limit, sub_limit = tpm, rpm, sub_rpm
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
  -- Held back only by what leases hold ungranted: it may be given back when they end.
  if refusal and leased_until > now
      and (tpm == 0 or tokens - leased_tokens + wanted <= token_limit)
      and requests - leased_requests + 1 <= request_limit
      and sub_requests - leased_requests + 1 <= sub_limit then
    wait = math.min(wait, leased_until - now)
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

-- Lock `lock.tokens` and `lock.requests` under a new id.
local function new_lock(lock)
  seq = seq + 1
  local id = int(seq)
  add(current, lock.app, lock.tokens, lock.requests)
  locked_tokens = locked_tokens + lock.tokens
  locked_requests = locked_requests + lock.requests
  write_lock(id, lock)
  redis.call('ZADD', expiry, int(lock.expires), id)
  return id
end

-- The lease that fits beside the request just admitted: requests, tokens.
local function room_for_lease()
  if lease_requests == 0 or share_ppm > 0 then return 0, 0 end
  local room_requests = math.min(request_limit - requests, sub_limit - sub_requests)
  local granted = math.min(lease_requests, math.floor(room_requests / LEASE_PART))
  if granted < 1 then return 0, 0 end
  if tpm == 0 then return granted, 0 end
  local room_tokens = math.floor((token_limit - tokens) / LEASE_PART)
  return granted, math.max(0, math.min(lease_tokens, room_tokens))
end

local function admit(k)
  local expires = now + lock_ttl_us
  local id = new_lock({bucket = current, tokens = wanted, app = app, expires = expires,
                       requests = 1, lease = false})
  local granted_requests, granted_tokens = room_for_lease()
  if granted_requests == 0 then return {now, 1, id, k, 0, 0, 0} end
  local lease = new_lock({bucket = current, tokens = granted_tokens, app = app, expires = expires,
                          requests = granted_requests, lease = true})
  lease_room(granted_tokens, granted_requests)
  leased_until = math.max(leased_until, now + lease_hold_us)
  return {now, 1, id, k, lease, granted_requests, granted_tokens}
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
