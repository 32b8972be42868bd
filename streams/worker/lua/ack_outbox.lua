-- Drop the first N outbox entries once Kafka acknowledged them, if the fence is unchanged.
-- KEYS[1] fence hash, KEYS[2] outbox list; ARGV[1] expected gen, ARGV[2] N.
-- Returns 1 when trimmed, -1 when another worker owns the partition now (nothing done).
if (redis.call('HGET', KEYS[1], 'gen') or '') ~= ARGV[1] then
  return -1
end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
return 1
