-- Settle locked messages: complete (delete), abandon (deliver again) or dead_letter.
-- ARGV: disposition, max_deliveries, reason, description, then pairs: seq, delivery count
-- Returns the seqs whose lock was lost (expired, or delivered again since): left untouched.
local disposition, max_deliveries = ARGV[1], tonumber(ARGV[2])
local reason, description = ARGV[3], ARGV[4]

local lost, released = {}, 0
for i = 5, #ARGV, 2 do
  local seq, delivery = ARGV[i], ARGV[i + 1]
  if not holds_lock(seq, delivery) then
    table.insert(lost, seq)
  elseif disposition == 'complete' then
    redis.call('ZREM', K_LOCKED, seq)
    redis.call('HDEL', K_MESSAGES, seq)
    redis.call('HDEL', K_DELIVERIES, seq)
  elseif disposition == 'abandon' then
    release(seq, max_deliveries)
    released = released + 1
  else
    dead_letter(seq, reason, description)
  end
end
if released > 0 then
  wake_receivers()
end
return lost
