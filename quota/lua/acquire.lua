--[[ acquire.lua: lock tokens and one request, or refuse with the exact wait until they fit.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm" (default_tpm 0: no token limit, Whisper), 3 tokens, 4 app
Returns {now, 1, lock_id}  or  {now, 0, retry_after_us, kind, used, limit}
  kind: "too_large" (never fits: retry_after_us = -1), "tokens", "requests", "sub_requests"
]]
local default_tpm, default_rpm = string.match(ARGV[2], '^(%d+) (%d+)$')
local problem = load(1, tonumber(default_tpm), tonumber(default_rpm))
if problem then return redis.error_reply(problem) end

local function acquire(wanted, app)
  if tpm > 0 and wanted > tpm then return {now, 0, -1, 'too_large', tokens, tpm} end
  local wait, refusal = 0, nil
  local function refuse(kind, used, limit, excess, name, span)
    wait = math.max(wait, wait_for(excess, name, span))
    refusal = refusal or {kind, used, limit}
  end
  if tpm > 0 and tokens + wanted > tpm then
    refuse('tokens', tokens, tpm, tokens + wanted - tpm, 't', SPAN)
  end
  if requests + 1 > rpm then refuse('requests', requests, rpm, requests + 1 - rpm, 'r', SPAN) end
  if sub_requests + 1 > sub_rpm then
    refuse('sub_requests', sub_requests, sub_rpm, sub_requests + 1 - sub_rpm, 'r', SUB_SPAN)
  end
  if refusal then return {now, 0, wait, refusal[1], refusal[2], refusal[3]} end

  seq = seq + 1
  local id = int(seq)
  local expires = now + lock_ttl_us
  add(current, app, wanted, 1)
  locked_tokens = locked_tokens + wanted
  locked_requests = locked_requests + 1
  redis.call('HSET', locks, id, string.format('%d|%d|%s|%d', current, wanted, app, expires))
  redis.call('ZADD', expiry, int(expires), id)
  return {now, 1, id}
end

local result = acquire(tonumber(ARGV[3]), ARGV[4])
save()
return result
