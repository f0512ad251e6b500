--[[ status.lua: one deployment now, with the window moved and expired locks swept.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm"
Returns {now, tpm, rpm, sub_rpm, tokens, requests, sub_requests, locked_tokens, locked_requests,
         open bucket, open bucket's charges, <state hash as HGETALL>}
]]
local default_tpm, default_rpm = string.match(ARGV[2], '^(%d+) (%d+)$')
local problem = load(1, tonumber(default_tpm), tonumber(default_rpm))
if problem then return redis.error_reply(problem) end
sweep()
save()
return {now, tpm, rpm, sub_rpm, tokens, requests, sub_requests, locked_tokens, locked_requests,
        head, serialized_open(), redis.call('HGETALL', state)}
