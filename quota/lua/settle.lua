--[[ settle.lua: finish locks (with the usage the answer stated, as never sent, or as refused by
the upstream), move a lock's charge to when its request is actually sent, or carve a lock out of
a lease; several operations of one deployment in one call.

A lease (acquire.lua) is a lock of many requests that one process grants from in memory
(quota/leases.py). Each grant is carved out of it as a lock of its own, "<lease id>.<n>": the
lease's tokens and requests move to the new lock, so the window's counts do not change, and from
then on any process can report or release that lock like any other; grants settled before they
were carved are booked together ("settled"). Releasing the lease gives back the room it still
holds.

KEYS  the deployment's state, locks, expiry (see the prelude)
ARGV  2 "default_tpm default_rpm", 3.. one operation each:
      "report <id> <actual tokens> <azure|usage>"  finish with the usage the answer stated
      "release <id>"                               never sent: give its tokens and requests back
      "reject <id> <cool-down us>"                 the upstream answered 429 or 5xx (0: none)
      "restamp <id>"                               sent only now, later than the margin covers
      "carve <lease id> <n> <tokens>"              lock <n> of the lease: <tokens>, one request
      "settled <lease id> <requests> <tokens> <extra> <refund tokens> <refund requests>"
                                                   grants of the lease settled before they were
                                                   carved, booked at once
Returns {now, result, ...}, a result per operation: {1, extra_tokens_charged, tokens_refunded}
  or {0, why}; why: "unknown", "done" (already reported or released), "expired", "stale"
  (restamp: the charge left the window before the request was sent; the lock is finished),
  "overdrawn" (carve: the lease has no such room left)
]]
-- Usage beyond the estimate is charged now; a refund only reaches a bucket still in the window,
-- so a late refund never creates capacity that did not exist.
local function report(lock, id, actual, model)
  local extra, refunded = actual - lock.tokens, 0
  if extra > 0 then
    add(current, lock.app, extra, 0)
  elseif extra < 0 and model == 'usage' and lock.bucket >= current - SPAN then
    add(lock.bucket, lock.app, extra, 0)
    refunded = -extra
  end
  unlock(id, lock, 'done')
  return {1, math.max(extra, 0), refunded}
end

-- A call that never reached upstream gives back its tokens and its request (a lease: the room it
-- still holds).
local function release(lock, id)
  local refunded = 0
  if lock.bucket >= current - SPAN then
    add(lock.bucket, lock.app, -lock.tokens, -lock.requests)
    refunded = lock.tokens
  end
  unlock(id, lock, 'done')
  return {1, 0, refunded}
end

-- The upstream refused (429) or failed (5xx) a request it received: it counted the request, so
-- the charge stays (a release would hand the next waiting caller the same 429), and the
-- deployment is skipped for the cool-down by every process, so a backlog waits once instead of
-- stampeding.
local function reject(lock, id, cooldown_us)
  unlock(id, lock, 'done')
  if cooldown_us > 0 then cool_down(now + cooldown_us) end
  return {1, 0, 0}
end

-- The request leaves only now, later than the upstream margin covers: move its charge (tokens and
-- request) from the bucket it was locked in to the current one, so our window holds it where the
-- upstream's will. Counting it later only keeps it counted longer: never an over-admission. A
-- charge that already left the window is not counted again unweighed: the lock is finished
-- ("stale") and the caller acquires again.
local function restamp(lock, id)
  if lock.bucket < current - SPAN then
    unlock(id, lock, 'done')
    return {0, 'stale'}
  end
  if lock.bucket < current then
    add(lock.bucket, lock.app, -lock.tokens, -lock.requests)
    add(current, lock.app, lock.tokens, lock.requests)
    lock.bucket = current
    write_lock(id, lock)
  end
  return {1, 0, 0}
end

-- Take `request_count` requests and `token_count` tokens out of what a lease holds ungranted;
-- false when it holds less (a bug in its process, or a lease already given back).
local function take(lease, id, request_count, token_count)
  if not lease.lease or lease.requests < request_count or lease.tokens < token_count then
    return false
  end
  lease.requests = lease.requests - request_count
  lease.tokens = lease.tokens - token_count
  lease_room(-token_count, -request_count)
  write_lock(id, lease)
  return true
end

-- Grant <n> of a lease becomes a lock of its own, in the lease's bucket, expiring with it: from
-- then on any process can settle it.
local function carve(lease, id, n, token_count)
  if not take(lease, id, 1, token_count) then return {0, 'overdrawn'} end
  local carved = id .. '.' .. n
  write_lock(carved, {bucket = lease.bucket, tokens = token_count, app = lease.app,
                      expires = lease.expires, requests = 1, lease = false})
  redis.call('ZADD', expiry, int(lease.expires), carved)
  return {1, 0, 0}
end

-- Grants of a lease granted and settled between two of its process's writes, booked at once
-- (never locks of their own): `request_count` grants of `token_count` tokens in all, `extra`
-- tokens used beyond them (charged now), `refund_tokens` and `refund_requests` given back (a
-- refund only reaches the lease's bucket while it is in the window).
local function settled(lease, id, request_count, token_count, extra, refund_tokens, refund_requests)
  if not take(lease, id, request_count, token_count) then return {0, 'overdrawn'} end
  locked_tokens = math.max(0, locked_tokens - token_count)
  locked_requests = math.max(0, locked_requests - request_count)
  if extra > 0 then add(current, lease.app, extra, 0) end
  local refunded = 0
  if (refund_tokens > 0 or refund_requests > 0) and lease.bucket >= current - SPAN then
    add(lease.bucket, lease.app, -refund_tokens, -refund_requests)
    refunded = refund_tokens
  end
  return {1, extra, refunded}
end

-- An operation as {function, id, arguments...}, or nil when it is malformed.
local function parse(operation)
  local verb, id, rest = string.match(operation, '^(%a+) ([%d.]+) ?(.*)$')
  if verb == 'report' then
    local actual, model = string.match(rest, '^(%d+) (%a+)$')
    if actual then return {report, id, tonumber(actual), model} end
  elseif verb == 'release' and rest == '' then
    return {release, id}
  elseif verb == 'reject' and string.match(rest, '^%d+$') then
    return {reject, id, tonumber(rest)}
  elseif verb == 'restamp' and rest == '' then
    return {restamp, id}
  elseif verb == 'carve' then
    local n, token_count = string.match(rest, '^(%d+) (%d+)$')
    if n then return {carve, id, n, tonumber(token_count)} end
  elseif verb == 'settled' then
    local counts = {string.match(rest, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')}
    if #counts == 5 then
      return {settled, id, tonumber(counts[1]), tonumber(counts[2]), tonumber(counts[3]),
              tonumber(counts[4]), tonumber(counts[5])}
    end
  end
  return nil
end

-- Every operation is checked before the window moves: a malformed one changes nothing.
local operations = {}
for i = 3, #ARGV do
  local operation = parse(ARGV[i])
  if not operation then
    return redis.error_reply('CONDUIT bad quota call: settle ' .. tostring(ARGV[i]))
  end
  operations[#operations + 1] = operation
end
local default_tpm, default_rpm = string.match(ARGV[2], '^(%d+) (%d+)$')
local problem = load(1, tonumber(default_tpm), tonumber(default_rpm))
if problem then return redis.error_reply(problem) end
local results = {now}
for _, operation in ipairs(operations) do
  local lock, why = find_lock(operation[2])
  results[#results + 1] = lock and operation[1](lock, unpack(operation, 2)) or {0, why}
end
save()
return results
