-- KEYS[1] ct:assigned:<instance>. ARGV: what ("idle" or "busy"), instance, its queues
-- (comma-separated), now.
-- A reserved worker stays out of every idle set and is told its reservation ("job attempt node")
-- whatever it asks. Otherwise "idle" puts it in its queues' idle sets (a gang may pick it) and
-- "busy" (it is about to run a job from a shared queue) takes it out of them, in one step with
-- gang_assign: a worker is either picked for a gang or running its own job, never both.
-- Returns the reservation, or '' when there is none.
local held = redis.call('GET', KEYS[1])
if held then return held end
for queue in string.gmatch(ARGV[3], '[^,]+') do
  if ARGV[1] == 'idle' then
    redis.call('ZADD', PREFIX .. 'idle:' .. queue, ARGV[4], ARGV[2])
  else
    redis.call('ZREM', PREFIX .. 'idle:' .. queue, ARGV[2])
  end
end
return ''
