--[[ settle.lua: finish a lock, with the usage the answer stated or as never sent.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm", 3 "report" | "release", 4 lock id,
      report: 5 actual tokens, 6 charge model ("azure" | "usage")
Returns {now, 1, extra_tokens_charged, tokens_refunded}  or  {now, 0, why}
  why: "unknown", "done" (already reported or released), "expired"
]]
local default_tpm, default_rpm = string.match(ARGV[2], '^(%d+) (%d+)$')
local problem = load(1, tonumber(default_tpm), tonumber(default_rpm))
if problem then return redis.error_reply(problem) end

-- Usage beyond the estimate is charged now; a refund only reaches a bucket still in the window,
-- so a late refund never creates capacity that did not exist.
local function report(id, actual, model)
  local lock, why = find_lock(id)
  if not lock then return {now, 0, why} end
  local extra, refunded = actual - lock.tokens, 0
  if extra > 0 then
    add(current, lock.app, extra, 0)
  elseif extra < 0 and model == 'usage' and lock.bucket >= current - SPAN then
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
  if lock.bucket >= current - SPAN then
    add(lock.bucket, lock.app, -lock.tokens, -1)
    refunded = lock.tokens
  end
  unlock(id, lock, 'done')
  return {now, 1, 0, refunded}
end

local result
if ARGV[3] == 'report' then
  result = report(ARGV[4], tonumber(ARGV[5]), ARGV[6])
elseif ARGV[3] == 'release' then
  result = release(ARGV[4])
else
  return redis.error_reply('CONDUIT bad quota call: settle ' .. tostring(ARGV[3]))
end
save()
return result
