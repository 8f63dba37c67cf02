-- KEYS[1] job hash. ARGV: allowed statuses as ",a,b," ('' = any), expected run id as JSON ('' = any),
-- new status ('' = unchanged), increment attempts ('1'/'0'), then field/value pairs (values JSON).
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return {'missing', ''} end
local cur = cjson.decode(raw)
if ARGV[1] ~= '' and not string.find(ARGV[1], ',' .. cur .. ',', 1, true) then return {'rejected', cur} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'run_id') ~= ARGV[2] then return {'rejected', cur} end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local new = ARGV[3]
if new ~= '' and new ~= cur then
  local id = cjson.decode(redis.call('HGET', KEYS[1], 'id'))
  redis.call('HSET', KEYS[1], 'status', cjson.encode(new))
  redis.call('SREM', PREFIX .. 'status:' .. cur, id)
  redis.call('SADD', PREFIX .. 'status:' .. new, id)
  if FINAL[new] and not FINAL[cur] then
    local spec = cjson.decode(redis.call('HGET', KEYS[1], 'spec') or 'null')
    if type(spec) == 'table' and type(spec['webhook_url']) == 'string' then
      redis.call('ZADD', PREFIX .. 'webhooks:due', 'NX', 0, id)  -- its notification, due now
    end
  end
end
return {'ok', cur}
