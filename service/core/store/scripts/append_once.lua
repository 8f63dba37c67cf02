-- KEYS[1] steps hash, KEYS[2] stream, KEYS[3] job hash. ARGV: kind, step, record JSON, field/value pairs.
-- Events use the same script with kind "event" and their sequence number as the step. Steps start
-- at 0 (an eval_at_start evaluation), so a kind with nothing stored yet is at -1.
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
return 1
