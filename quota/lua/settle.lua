--[[ settle.lua: finish a lock (with the usage the answer stated, as never sent, or as refused by
the upstream), or move its charge to when the request is actually sent.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm", 3 operation, 4 lock id, then
      report: 5 actual tokens, 6 charge model ("azure" | "usage")
      release: (nothing more)
      reject: 5 cool-down (µs; 0: none): the upstream answered 429 or 5xx
      restamp: (nothing more): the request is being sent now, later than the margin covers
Returns {now, 1, extra_tokens_charged, tokens_refunded}  or  {now, 0, why}
  why: "unknown", "done" (already reported or released), "expired", "stale" (restamp: the charge
  left the window before the request was sent; the lock is finished)
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

-- The upstream refused (429) or failed (5xx) a request it received: it counted the request, so
-- the charge stays (a release would hand the next waiting caller the same 429), and the
-- deployment is skipped for the cool-down by every process, so a backlog waits once instead of
-- stampeding.
local function reject(id, cooldown_us)
  local lock, why = find_lock(id)
  if not lock then return {now, 0, why} end
  unlock(id, lock, 'done')
  if cooldown_us > 0 then cool_down(now + cooldown_us) end
  return {now, 1, 0, 0}
end

-- The request leaves only now, later than the upstream margin covers: move its charge (tokens and
-- request) from the bucket it was locked in to the current one, so our window holds it where the
-- upstream's will. Counting it later only keeps it counted longer: never an over-admission. A
-- charge that already left the window is not counted again unweighed: the lock is finished
-- ("stale") and the caller acquires again.
local function restamp(id)
  local lock, why = find_lock(id)
  if not lock then return {now, 0, why} end
  if lock.bucket < current - SPAN then
    unlock(id, lock, 'done')
    return {now, 0, 'stale'}
  end
  if lock.bucket < current then
    if lock.bucket >= current - SPAN then add(lock.bucket, lock.app, -lock.tokens, -1) end
    add(current, lock.app, lock.tokens, 1)
    redis.call('HSET', locks, id, string.format('%d|%d|%s|%d', current, lock.tokens, lock.app,
      lock.expires))
  end
  return {now, 1, 0, 0}
end

local result
if ARGV[3] == 'report' then
  result = report(ARGV[4], tonumber(ARGV[5]), ARGV[6])
elseif ARGV[3] == 'release' then
  result = release(ARGV[4])
elseif ARGV[3] == 'reject' then
  result = reject(ARGV[4], tonumber(ARGV[5]))
elseif ARGV[3] == 'restamp' then
  result = restamp(ARGV[4])
else
  return redis.error_reply('CONDUIT bad quota call: settle ' .. tostring(ARGV[3]))
end
save()
return result
