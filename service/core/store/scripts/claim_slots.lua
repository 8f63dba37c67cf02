-- KEYS[1] pending list, KEYS[2] active sorted set. ARGV: max_parallel, now. Forgets the active jobs
-- that have finished, then moves pending jobs still queued to active until max_parallel are;
-- each is marked "dispatching". Returns their ids: the caller sends their messages.
local function status(id)
  local raw = redis.call('HGET', PREFIX .. 'job:' .. id, 'status')
  if not raw then return nil end
  return cjson.decode(raw)
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local st = status(id)
  if st == nil or FINAL[st] then
    redis.call('ZREM', KEYS[2], id)
  end
end
local taken = {}
while redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if status(id) == 'queued' then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', PREFIX .. 'job:' .. id, 'phase', cjson.encode(DISPATCHING))
    table.insert(taken, id)
  end
end
return taken
