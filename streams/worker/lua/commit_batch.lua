-- Commit one partition's batch atomically (one Redis round trip, one Cluster slot).
--
-- Fencing: the fence hash holds `gen`, bumped by every commit. A worker commits only if
-- `gen` is still the value it read (or last wrote); a worker that lost the partition in a
-- rebalance (a zombie) therefore fails here and writes nothing.
--
-- KEYS[1]  fence hash          KEYS[2]  outbox list          KEYS[3]  due sorted set
-- KEYS[4..3+S]  customer state keys, then any hashes named by the increments
-- ARGV: expected_gen, outbox_trim, F, F x (field, value),  -- fence fields (offsets, high)
--       O, O x entry,                                      -- outputs to append to the outbox
--       E, tickfail_index, Q, Q x due_index,               -- erased customers (before the
--         E x (state_index, ledger_index, customer_id)     -- states below): their state and
--                                                             ledger deleted, removed from
--                                                             KEYS[3] and the Q due sets and
--                                                             the tick-failure hash
--       S, S x state,                                      -- values for KEYS[4..3+S]
--       I, I x (key_index, field, delta),                  -- HINCRBY on KEYS[key_index]
--       Z, Z x (key_index, customer_id, due_ms or ""),     -- ZADD to (or ZREM from) a due set
--       L, keep, L x (key_index, entry)                    -- LPUSH + LTRIM: recent ledger
--       D, D x field,                                      -- HDEL from the fence
--       U, U x (key_index, outcome_index, ttl),            -- a replay ended: its due set
--                                                             merged into KEYS[3], deleted;
--                                                             its outcome hash expires
--       token                                              -- unique to this commit
-- Returns the new gen, or -1 when the fence moved (nothing written).
--
-- Retries: a commit whose reply was lost (Redis restarted, connection dropped) is sent
-- again by the worker. If the first one was applied, `gen` has moved, but the fence's
-- `commit` field still holds this commit's token: the script answers the gen it produced
-- instead of -1, and applies nothing twice.
local fence, outbox, due = KEYS[1], KEYS[2], KEYS[3]
local token = ARGV[#ARGV]
local current = redis.call('HGET', fence, 'gen') or ''
if current ~= ARGV[1] then
  if token ~= '' and redis.call('HGET', fence, 'commit') == token then
    return tonumber(current)
  end
  return -1
end
local i = 2
local trim = tonumber(ARGV[i]); i = i + 1
if trim > 0 then
  redis.call('LTRIM', outbox, trim, -1)
end
local nf = tonumber(ARGV[i]); i = i + 1
for _ = 1, nf do
  redis.call('HSET', fence, ARGV[i], ARGV[i + 1]); i = i + 2
end
local no = tonumber(ARGV[i]); i = i + 1
for _ = 1, no do
  redis.call('RPUSH', outbox, ARGV[i]); i = i + 1
end
local ne = tonumber(ARGV[i]); i = i + 1
if ne > 0 then
  local tickfail = KEYS[tonumber(ARGV[i])]; i = i + 1
  local nq = tonumber(ARGV[i]); i = i + 1
  local dues = {due}
  for _ = 1, nq do
    dues[#dues + 1] = KEYS[tonumber(ARGV[i])]; i = i + 1
  end
  for _ = 1, ne do
    redis.call('DEL', KEYS[tonumber(ARGV[i])], KEYS[tonumber(ARGV[i + 1])])
    for _, zkey in ipairs(dues) do
      redis.call('ZREM', zkey, ARGV[i + 2])
    end
    redis.call('HDEL', tickfail, ARGV[i + 2])
    i = i + 3
  end
end
local ns = tonumber(ARGV[i]); i = i + 1
for k = 1, ns do
  redis.call('SET', KEYS[3 + k], ARGV[i]); i = i + 1
end
local ni = tonumber(ARGV[i]); i = i + 1
for _ = 1, ni do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]); i = i + 3
end
local nz = tonumber(ARGV[i]); i = i + 1
for _ = 1, nz do
  local zkey = KEYS[tonumber(ARGV[i])]
  if ARGV[i + 2] == '' then
    redis.call('ZREM', zkey, ARGV[i + 1])
  else
    redis.call('ZADD', zkey, ARGV[i + 2], ARGV[i + 1])
  end
  i = i + 3
end
local nl = tonumber(ARGV[i]); i = i + 1
local keep = tonumber(ARGV[i]); i = i + 1
for _ = 1, nl do
  local key = KEYS[tonumber(ARGV[i])]
  redis.call('LPUSH', key, ARGV[i + 1])
  redis.call('LTRIM', key, 0, keep - 1)
  i = i + 2
end
local nd = tonumber(ARGV[i]); i = i + 1
for _ = 1, nd do
  redis.call('HDEL', fence, ARGV[i]); i = i + 1
end
local nu = tonumber(ARGV[i]); i = i + 1
for _ = 1, nu do
  local rdue = KEYS[tonumber(ARGV[i])]
  redis.call('ZUNIONSTORE', due, 2, due, rdue, 'AGGREGATE', 'MIN')
  redis.call('DEL', rdue)
  redis.call('EXPIRE', KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2]))
  i = i + 3
end
redis.call('HSET', fence, 'commit', token)
return redis.call('HINCRBY', fence, 'gen', 1)
