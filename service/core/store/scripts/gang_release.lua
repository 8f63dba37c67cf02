-- KEYS[1] ct:gang:<job>, KEYS[2] the queue's waiting gangs. ARGV: job, attempt, requeue ("1"/"0").
-- Ends attempt <attempt> of the job's gang: every reservation of it still held is dropped (those
-- workers are free again), and with requeue the job waits again at the place it had. A release
-- of another attempt than the current one, or of one already released, does nothing (returns 0).
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] or redis.call('HEXISTS', KEYS[1], 'size') == 0 then
  return 0
end
local size = tonumber(redis.call('HGET', KEYS[1], 'size') or '0')
for i = 0, size - 1 do
  local instance = redis.call('HGET', KEYS[1], 'node:' .. i)
  if instance then
    local key = PREFIX .. 'assigned:' .. instance
    if redis.call('GET', key) == ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. i then redis.call('DEL', key) end
    redis.call('HDEL', KEYS[1], 'node:' .. i)
  end
end
redis.call('HDEL', KEYS[1], 'size', 'assigned_at', 'joined')
redis.call('ZREM', PREFIX .. 'gangs-forming', ARGV[1])
if ARGV[3] == '1' then
  local place = redis.call('HGET', KEYS[1], 'place') or '0'
  redis.call('ZADD', KEYS[2], 'NX', place, ARGV[1])
end
return 1
