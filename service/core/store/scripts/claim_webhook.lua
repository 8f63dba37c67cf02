-- KEYS[1] due sorted set. ARGV: member, now, lease end. Takes a due notification for one attempt:
-- its time moves to the lease end (another worker retries it then if this one dies mid-attempt).
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at or tonumber(at) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
