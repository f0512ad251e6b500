--[[ observe.lua: book as external usage what the upstream says is gone beyond our own count.

Upstream (other clients of a shared deployment) has spent what we did not see: charge the
difference now. Never a refund: upstream may count in another window. Azure's remaining requests
are those of its 10 s window, so they are set against the sub-window; against the minute they
would book five sixths of the RPM that nobody spent.

The headers tell the upstream's count when the request arrived, and an answer comes back later
(a long completion, seconds): charges that left our window in between were in the upstream's
count and are ours, not an outside client's. With the request's lock id, our count is taken as
it was when the request's charge was stamped (its lock's bucket): what left the window since
("gone", see the prelude) counts as ours. Without it, our count now.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm", 3 remaining tokens (per window), 4 remaining requests (per
      sub-window, as Azure's x-ratelimit-remaining-requests counts them); -1: not reported;
      5 the lock id of the request whose answer carried them ("": not known),
      6 how long (µs) the upstream says its excess lasts (-1: not said, a window): a 429's
        retry-after says when the upstream has room again, so what it counts beyond us is
        booked to leave our window then, not a whole window later

Returns {now, 1, external_tokens_charged, external_requests_charged}
]]
local default_tpm, default_rpm = string.match(ARGV[2], '^(%d+) (%d+)$')
local problem = load(1, tonumber(default_tpm), tonumber(default_rpm))
if problem then return redis.error_reply(problem) end

local remaining_tokens, remaining_requests = tonumber(ARGV[3]), tonumber(ARGV[4])
-- Ours as the upstream could have counted them: the window now, plus what left it since the
-- request's charge was stamped.
local seen_tokens, seen_requests = tokens, sub_requests
local lock = ARGV[5] ~= '' and find_lock(ARGV[5]) or nil
if lock and lock.bucket < current - KEEP then
  -- Stamped longer ago than "gone" remembers: the headers are too old to weigh.
  remaining_tokens, remaining_requests = -1, -1
elseif lock then
  local gone = gone_buckets()
  local function past(bucket, index, name)  -- what a bucket of the last SPAN + KEEP held
    if bucket >= current - SPAN then return bucket_count(bucket, name) end
    return gone[bucket] and gone[bucket][index] or 0
  end
  for bucket = lock.bucket - SPAN, current - SPAN - 1 do
    seen_tokens = seen_tokens + past(bucket, 1, 't')
  end
  for bucket = lock.bucket - SUB_SPAN, current - SUB_SPAN - 1 do
    seen_requests = seen_requests + past(bucket, 2, 'r')
  end
end
local external_tokens, external_requests = 0, 0
if remaining_tokens >= 0 and tpm > 0 then
  external_tokens = math.max(0, tpm - seen_tokens - remaining_tokens)
end
if remaining_requests >= 0 then
  external_requests = math.max(0, sub_rpm - seen_requests - remaining_requests)
end
-- Booked to an app no caller can be: app ids may not contain parentheses (sansio._APP_ID).
local EXTERNAL = '(external)'
local lasts_us = tonumber(ARGV[6]) or -1
-- The bucket whose charges leave the window when the excess leaves the upstream's.
local bucket = current
if lasts_us >= 0 then
  bucket = math.ceil((now + lasts_us) / bucket_us) - SPAN - 1
  bucket = math.min(current, math.max(current - SPAN, bucket))
end
if (external_tokens > 0 or external_requests > 0) and bucket < current then
  -- A closed bucket: EXTERNAL joins its apps, so its fields leave with it.
  local prefix = int(bucket) .. ':'
  local apps = redis.call('HGET', state, prefix .. 'apps')
  if not apps or apps == '' then
    redis.call('HSET', state, prefix .. 'apps', EXTERNAL)
  elseif not string.find(',' .. apps .. ',', ',' .. EXTERNAL .. ',', 1, true) then
    redis.call('HSET', state, prefix .. 'apps', apps .. ',' .. EXTERNAL)
  end
end
if external_tokens > 0 or external_requests > 0 then
  add(bucket, EXTERNAL, external_tokens, external_requests)
end
save()
return {now, 1, external_tokens, external_requests}
