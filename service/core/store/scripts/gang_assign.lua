-- KEYS[1] the queue's waiting gangs (job id -> its place), KEYS[2] the queue's idle workers
-- (instance -> last idle beat). ARGV: now, idle_ttl_s, reserve_ttl_ms.
-- The first waiting job still queued gets all of its nodes from the live idle workers at once, or
-- nothing: no gang ever holds part of the machines. Each chosen worker leaves every idle set and
-- is reserved (ct:assigned:<instance>, expiring); the job leaves the waiting set and its gang is
-- written afresh (ct:gang:<job>: attempt, size, place, assigned_at, node:<i>). Gangs are served in
-- order: a later, smaller gang never overtakes the first (no starvation of large gangs).
-- Returns {job, attempt, instance of node 0, node 1, ...}, or {} when nothing can start.
local now = tonumber(ARGV[1])
local head
while true do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then return {} end
  head = first[1]
  local raw = redis.call('HGET', PREFIX .. 'job:' .. head, 'status')
  if raw and cjson.decode(raw) == 'queued' then
    redis.call('HSET', PREFIX .. 'gang:' .. head, 'place', first[2])
    break
  end
  redis.call('ZREM', KEYS[1], head)  -- cancelled or gone while it waited
  redis.call('HDEL', PREFIX .. 'gang-need', head)
end
local need = tonumber(redis.call('HGET', PREFIX .. 'gang-need', head) or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[2])))
local idle = redis.call('ZRANGE', KEYS[2], 0, -1)
if need < 1 or #idle < need then return {} end
table.sort(idle)
local gang = PREFIX .. 'gang:' .. head
for _, field in ipairs(redis.call('HKEYS', gang)) do
  -- what the nodes of an earlier attempt told each other (endpoint, marker, run, exits...)
  if field ~= 'attempt' and field ~= 'place' then redis.call('HDEL', gang, field) end
end
local attempt = redis.call('HINCRBY', gang, 'attempt', 1)
local out = {head, tostring(attempt)}
for i = 1, need do
  local instance = idle[i]
  local queues = redis.call('HGET', PREFIX .. 'worker:' .. instance, 'queues') or ''
  for queue in string.gmatch(queues, '[^,]+') do
    redis.call('ZREM', PREFIX .. 'idle:' .. queue, instance)
  end
  redis.call('ZREM', KEYS[2], instance)
  local reservation = head .. ' ' .. attempt .. ' ' .. (i - 1)
  redis.call('SET', PREFIX .. 'assigned:' .. instance, reservation, 'PX', ARGV[3])
  redis.call('HSET', gang, 'node:' .. (i - 1), instance)
  table.insert(out, instance)
end
redis.call('HSET', gang, 'size', need, 'assigned_at', ARGV[1], 'joined', 0)
redis.call('ZREM', KEYS[1], head)
redis.call('ZADD', PREFIX .. 'gangs-forming', ARGV[1], head)
return out
