--[[ observe.lua: book as external usage what the upstream says is gone beyond our own count.

Upstream (other clients of a shared deployment) has spent what we did not see: charge the
difference now. Never a refund: upstream may count in another window. Azure's remaining requests
are those of its 10 s window, so they are set against the sub-window; against the minute they
would book five sixths of the RPM that nobody spent.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm", 3 remaining tokens (per window), 4 remaining requests (per
      sub-window, as Azure's x-ratelimit-remaining-requests counts them); -1: not reported
Returns {now, 1, external_tokens_charged, external_requests_charged}
]]
local default_tpm, default_rpm = string.match(ARGV[2], '^(%d+) (%d+)$')
local problem = load(1, tonumber(default_tpm), tonumber(default_rpm))
if problem then return redis.error_reply(problem) end

local remaining_tokens, remaining_requests = tonumber(ARGV[3]), tonumber(ARGV[4])
local external_tokens, external_requests = 0, 0
if remaining_tokens >= 0 and tpm > 0 then
  external_tokens = math.max(0, tpm - tokens - remaining_tokens)
end
if remaining_requests >= 0 then
  external_requests = math.max(0, sub_rpm - sub_requests - remaining_requests)
end
if external_tokens > 0 or external_requests > 0 then
  -- Booked to an app no caller can be: app ids may not contain parentheses (sansio._APP_ID).
  add(current, '(external)', external_tokens, external_requests)
end
save()
return {now, 1, external_tokens, external_requests}
