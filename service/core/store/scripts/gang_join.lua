-- KEYS[1] ct:gang:<job>, KEYS[2] ct:assigned:<instance>, KEYS[3] ct:busy:<instance>. ARGV: job,
-- attempt, node, instance, now.
-- Node <node> of attempt <attempt> starts: its reservation is consumed (the worker now runs the
-- node, busy with the job) and counted. Returns {joined, size}, or {} when the reservation is no
-- longer this one (released or expired: the node must not start).
local reservation = ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3]
if redis.call('GET', KEYS[2]) ~= reservation then return {} end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'node:' .. ARGV[3]) ~= ARGV[4] then
  return {}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
local joined = redis.call('HINCRBY', KEYS[1], 'joined', 1)
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
if joined >= size then redis.call('ZREM', PREFIX .. 'gangs-forming', ARGV[1]) end
return {joined, size}
