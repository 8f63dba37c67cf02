-- KEYS[1] open experiments set, KEYS[2] pending list, KEYS[3] active set, KEYS[4] experiment hash.
-- ARGV[1] experiment id. Closes it; the first close of one with a webhook_url makes its
-- notification due (later calls find it closed already and add nothing).
local was_open = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
if was_open == 1 then
  local spec = cjson.decode(redis.call('HGET', KEYS[4], 'spec') or 'null')
  if type(spec) == 'table' and type(spec['webhook_url']) == 'string' then
    redis.call('ZADD', PREFIX .. 'webhooks:due', 'NX', 0, ARGV[1])
  end
end
return was_open
