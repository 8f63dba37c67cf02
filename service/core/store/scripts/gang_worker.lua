-- KEYS[1] ct:assigned:<instance>, KEYS[2] ct:busy:<instance> (job -> last renewal time). ARGV:
-- what ("idle", "busy" or "free"), instance, its queues (comma-separated), now, job, busy_ttl_s.
-- "idle" (each heartbeat): a worker with no job renewed within busy_ttl_s joins its queues' idle
-- sets (a gang may pick it); with one it leaves them. "busy" (a task about to run a job from a
-- shared queue): the job is recorded and the worker leaves the idle sets, in one step with
-- gang_assign, so a worker is either picked for a gang or running its own job, never both.
-- "free": the job is over. A reserved worker stays out of the idle sets, is not marked busy and
-- is told its reservation ("job attempt node") whatever it asks.
-- Returns the reservation, or '' when there is none.
local held = redis.call('GET', KEYS[1])
if held and ARGV[1] ~= 'free' then return held end
local now = tonumber(ARGV[4])
if ARGV[1] == 'free' then
  redis.call('HDEL', KEYS[2], ARGV[5])
  return held or ''
end
local join = false
if ARGV[1] == 'busy' then
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[4])
else
  join = true
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    if now - tonumber(entries[i + 1]) > tonumber(ARGV[6]) then
      redis.call('HDEL', KEYS[2], entries[i])  -- its task died without saying so
    else
      join = false
    end
  end
end
for queue in string.gmatch(ARGV[3], '[^,]+') do
  if join then
    redis.call('ZADD', PREFIX .. 'idle:' .. queue, ARGV[4], ARGV[2])
  else
    redis.call('ZREM', PREFIX .. 'idle:' .. queue, ARGV[2])
  end
end
return ''
