"""Lua scripts: every state change of a job is one of these, so it is atomic and one round trip.

Each script touches the keys of one queue only (they share a hash tag). Job hashes are named
from ``job_prefix`` + id inside the scripts; they carry the queue's hash tag, so they live in
the same Cluster slot as the keys passed in KEYS. Times are the Redis server's clock (``TIME``),
in milliseconds, so workers on machines with skewed clocks still agree on lease deadlines.

Scripts are called by SHA (``EVALSHA``); a ``NOSCRIPT`` reply (Redis restarted or flushed its
script cache) loads them again and retries (see ``ScriptRunner``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

# Shared helpers: each script is given those it uses (see _with_helpers).
_PRELUDE = r"""
-- Scripts must never fail half-way (Redis keeps the writes made before an error), so job
-- hashes are read defensively: a key of another type is no job, a garbage number counts as 0.
local function is_job(key)
  return redis.call('TYPE', key)['ok'] == 'hash'
end

local function bump(key, field, by)
  local n = (tonumber(redis.call('HGET', key, field)) or 0) + by
  redis.call('HSET', key, field, n)
  return n
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A whole number as a string for redis.call, which would otherwise format the Lua number
-- itself, and not always usefully:
-- - Redis 7.2.0 to 7.2.4 format it in the shortest form, so 100000000 goes as '1e+08', which
--   PEXPIRE refuses (redis#13113): TTLs always go through intstr().
-- - Redis before 7.2 format it with '%.17g', a floating-point conversion of about 3,000
--   instructions: a claimed and finished job made six (callgrind). string.format costs
--   nearly as much, so scripts that handle many jobs make the strings of the numbers their
--   jobs share (times, TTLs) once per call: CLAIM by hand, FINISH by setting STRS, a table
--   that intstr() then keeps them in. Redis 7.2.5 and later format whole numbers cheaply.
local STRS = nil

local function intstr(n)
  local strs = STRS
  if not strs then return string.format('%d', n) end
  local s = strs[n]
  if not s then
    s = string.format('%d', n)
    strs[n] = s
  end
  return s
end

-- A list of strings as netstrings, '<length>:<bytes>' each, for clients and workers of
-- earlier versions (current ones read what cmsgpack.pack makes: see terminate()). The length
-- goes through '%d': concatenated as a number, Lua would format it as a float.
local function netstrings(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = string.format('%d:', #v) .. v end
  return table.concat(parts)
end

-- A script that handles many jobs in one call (CLAIM, FINISH, ENQUEUE_MANY) turns ZADDS on:
-- zadd() then collects its additions and zadd_flush() makes them with one ZADD per key, at
-- the end. Each redis.call costs more than the work of adding one member, so this saves about
-- one call per job. Elsewhere zadd() writes at once. Only additions that nothing reads later
-- in the same call are made through zadd().
local ZADDS = {on = false, keys = {}, args = {}}

local function zadd(key, score, member)
  if not ZADDS.on then
    redis.call('ZADD', key, score, member)
    return
  end
  local a = ZADDS.args[key]
  if not a then
    a = {}
    ZADDS.args[key] = a
    ZADDS.keys[#ZADDS.keys + 1] = key
  end
  a[#a + 1] = score
  a[#a + 1] = member
end

-- Calls ``cmd key <items>`` for a list of items, in chunks that unpack() can take.
local function call_chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

local function zadd_flush()
  for _, key in ipairs(ZADDS.keys) do call_chunked('ZADD', key, ZADDS.args[key]) end
  ZADDS.keys, ZADDS.args = {}, {}
end

-- ENQUEUE_MANY turns MANY on: its jobs share one TIME (``now``) and one INCRBY of the queue's
-- sequence (``seq``: the last number taken), their ZADDs to the queue are made at the end
-- (ZADDS), and once one of them is queued (``queued``) the queue is known not to be empty.
local MANY = {on = false, now = nil, seq = 0, queued = false}

-- Queued jobs are scored so that ZPOPMIN takes the highest priority first, FIFO within one
-- priority: (100 - priority) * 2^44 + sequence. Priorities are clamped to [-100, 100].
-- ``was_empty``: whether the queue was empty before this job, if the caller knows.
local function push_queued(queued, seq, channel, id, priority, was_empty)
  local p = tonumber(priority) or 0
  if p ~= p then p = 0 end  -- 'nan' from a corrupt hash: ZADD would refuse the score
  if p > 100 then p = 100 elseif p < -100 then p = -100 end
  -- The score goes as a string made by '%d': Redis before 7.2 would format the number with
  -- '%.17g', which for a 16-digit score takes about four times as many instructions.
  if MANY.on then  -- was_empty is always given then
    MANY.seq = MANY.seq + 1
    zadd(queued, string.format('%d', (100 - p) * 17592186044416 + MANY.seq), id)
    MANY.queued = true
  else
    local n = redis.call('INCR', seq)
    redis.call('ZADD', queued, string.format('%d', (100 - p) * 17592186044416 + n), id)
  end
  -- Wake idle workers only when the queue goes from empty to non-empty: a worker that finds
  -- a queue empty waits for this message, and busy workers are not flooded.
  if was_empty == nil then was_empty = redis.call('ZCARD', queued) == 1 end
  if was_empty then redis.call('PUBLISH', channel, 'q') end
end

-- Direct hand-off. A worker that found a queue empty, with slots free, offers to take its next
-- job: member '<lease ms>|<worker>' of the queue's 'idle' set, scored by when the offer lapses
-- (a worker that went quiet stops getting jobs this way after that). See hand_off() in ENQUEUE.
local function offer(queued, idle, ttl_ms, member, now)
  if redis.call('ZCARD', queued) > 0 then return 0 end
  redis.call('ZADD', idle, now + ttl_ms, member)
  -- The set goes with the last offer to lapse. Only lengthen its TTL: workers with a shorter
  -- heartbeat make shorter offers, which must not cut the others short (a fresh set has
  -- none: PTTL -1).
  if redis.call('PTTL', idle) < ttl_ms then redis.call('PEXPIRE', idle, intstr(ttl_ms)) end
  return 1
end

-- A scheduled job that became the earliest one wakes the timers that sleep until it is due.
local function push_scheduled(scheduled, channel, id, due)
  redis.call('ZADD', scheduled, due, id)
  local head = redis.call('ZRANGE', scheduled, 0, 0)
  if head[1] == id then redis.call('PUBLISH', channel, 's') end
end

-- A TTL in ms read from a job hash, made safe for PEXPIRE: a hash may hold anything (a
-- corrupt or hostile writer), and PEXPIRE refuses fractions, 'inf', 'nan' and huge values,
-- which would fail the script half-way. Missing: 0. Not a number: 7 days (the default
-- FAILURE_TTL), so the job stays visible and still expires. Capped at ~31 years.
local function safe_ttl(ttl)
  if not ttl or ttl == '' then return 0 end
  local n = tonumber(ttl)
  if n == nil or n ~= n then return 604800000 end
  if n < 0 then return -1 end
  if n > 1e12 then return 1e12 end
  return math.floor(n)
end

-- Move a job hash into a terminal state: registry scored by expiry, hash expiring with it.
-- Extra field/value pairs are written in the same HSET. Expired ids leave the registries in
-- MAINTAIN, not here on every job.
--
-- Clients blocked in Job.get() are woken only when one registered (field 'w', passed as
-- ``waited``), so the common case costs nothing. The token pushed on their list is the ended
-- job's hash, so a waiter needs no further read, even when the hash is deleted at once (ttl
-- 0). Waiters rotate the list with BLMOVE and never consume the token. The hash goes as a
-- MessagePack array, which cmsgpack builds in C: as netstrings built here, it took a quarter
-- of a one-job FINISH's Redis instructions (bench/redis_cost.py, Redis 7.0: 391,116 -> 285,193).
-- Waiters of earlier versions register 'w' = '1' and read only netstrings ("<len>:<bytes>" per
-- field and value); the current ones register '2' unless a '1' is there, and read both.
local function terminate(key, registry, id, status, now, ttl, waited, done_prefix, ...)
  local ended = now
  if STRS then ended = intstr(now) end
  redis.call('HSET', key, 'status', status, 'ended_at', ended, ...)
  ttl = safe_ttl(ttl)
  if waited then
    local token
    if waited == '1' then
      token = netstrings(redis.call('HGETALL', key))
    else
      token = cmsgpack.pack(redis.call('HGETALL', key))
    end
    local done = done_prefix .. id
    redis.call('DEL', done)
    redis.call('RPUSH', done, token)
    local t = ttl
    if t < 60000 then t = 60000 end
    redis.call('PEXPIRE', done, intstr(t))
  end
  if ttl < 0 then
    redis.call('PERSIST', key)
    zadd(registry, '+inf', id)
  elseif ttl == 0 then
    redis.call('DEL', key)
  else
    redis.call('PEXPIRE', key, intstr(ttl))
    local expires = now + ttl
    if STRS then expires = intstr(expires) end
    zadd(registry, expires, id)
  end
end

-- A deferred job's 'dep_ids' field (ENQUEUE writes it): the JSON list of the ids it waits
-- for. Absent (a hash of an earlier version): nil. Not a list (a corrupt hash): empty.
local function dep_list(text)
  if not text then return nil end
  local ok, list = pcall(cjson.decode, text)
  if ok and type(list) == 'table' then return list end
  return {}
end

-- A deferred job ``id`` ends without running (canceled, deleted): its links in the
-- dependents sets of the jobs it waited for go with it, so that their end cannot act on a
-- later job that reuses the id. ``ids``: its 'dep_ids' field.
local function unlink(deps_prefix, id, ids)
  for _, d in ipairs(dep_list(ids) or {}) do
    if type(d) == 'string' then redis.call('SREM', deps_prefix .. d, id) end
  end
end

-- A job ended: settle the jobs deferred on it (always in the same queue). ``ok`` (finished):
-- each dependent's count of pending dependencies drops, and at zero it is queued. Not ok
-- (failed, canceled, deleted): each dependent is canceled, unless it asked to run anyway, and
-- so, in turn, are its own dependents.
-- A member of the dependents set is acted on only when its hash says it waits for the ending
-- job ('dep_ids'; hashes of earlier versions lack it and are trusted) and not for a slot of
-- its limit key: a link left by an earlier job of the same id must not release or cancel a
-- later one.
-- q = {job_prefix, deps_prefix, deferred, queued, seq, channel, canceled, done_prefix}
local function settle(q, id, ok)
  local stack = {{id, ok}}
  while #stack > 0 do
    local item = table.remove(stack)
    local set = q[2] .. item[1]
    local members = redis.call('SMEMBERS', set)
    if #members > 0 then redis.call('DEL', set) end
    for _, dep in ipairs(members) do
      local key = q[1] .. dep
      local h = is_job(key) and redis.call('HMGET', key, 'status', 'dep_any', 'dep_ids',
        'limit_wait')
      local waits = h and h[1] == 'deferred' and h[4] ~= '1'
      if waits and h[3] then
        waits = false
        for _, d in ipairs(dep_list(h[3])) do
          if d == item[1] then waits = true break end
        end
      end
      if waits then
        if item[2] or h[2] == '1' then
          if bump(key, 'pending', -1) <= 0 then
            redis.call('ZREM', q[3], dep)
            redis.call('HSET', key, 'status', 'queued')
            push_queued(q[4], q[5], q[6], dep, redis.call('HGET', key, 'priority'))
          end
        else
          redis.call('ZREM', q[3], dep)
          local err = cjson.encode({type = 'DependencyFailed', traceback = '',
            message = 'canceled because its dependency ' .. item[1] .. ' did not finish'})
          redis.call('HSET', key, 'error', err)
          unlink(q[2], dep, h[3])
          local f = redis.call('HMGET', key, 'failure_ttl', 'w')
          terminate(key, q[7], dep, 'canceled', now_ms(), f[1], f[2], q[8])
          stack[#stack + 1] = {dep, false}
        end
      end
    end
  end
end

-- Concurrency and rate limits (see limits.py). A limited job's hash carries 'limit_key' and
-- 'max_concurrency' and/or 'rate_n', 'rate_ms', 'rate_burst', written at enqueue.
-- The helpers derive every key they touch from the job prefix '<prefix>:{<queue>}:job:'
-- (keys.py), so the scripts that call them keep their KEYS and ARGV; all those keys carry the
-- queue's hash tag, like the job hashes.
local function qkey(job_prefix, name)
  return string.sub(job_prefix, 1, -5) .. name
end

-- A limit field as a positive finite number, else ``default``: a garbled field (0, nan, inf)
-- must neither fail a script half-way nor park a job for ever.
local function positive(x, default)
  x = tonumber(x)
  if x and x > 0 and x < math.huge then return x end
  return default
end

-- How long a slot stays reserved for a waiter sent back to queued: a worker claiming it in
-- that time gets the slot even if newer jobs of its key came first.
local SLOT_RESERVE_MS = 60000

-- Send up to ``free`` jobs waiting for a slot of a limit key back to queued, each to the place
-- in the queue it had (its queued score), with a slot reserved for it. Ids of jobs that no
-- longer wait (canceled, deleted, enqueued again) are dropped on the way.
local function wake_waiters(job_prefix, base, free, now)
  if free <= 0 then return end
  local wait, run = base .. ':wait', base .. ':run'
  local queued = qkey(job_prefix, 'queued')
  for _ = 1, free + 1000 do
    if free <= 0 then return end
    local head = redis.call('ZPOPMIN', wait)
    if #head == 0 then return end
    local id = head[1]
    local key = job_prefix .. id
    if is_job(key) then
      local f = redis.call('HMGET', key, 'status', 'limit_wait')
      if f[1] == 'deferred' and f[2] == '1' then
        redis.call('HDEL', key, 'limit_wait')
        redis.call('HSET', key, 'status', 'queued')
        redis.call('ZREM', qkey(job_prefix, 'deferred'), id)
        redis.call('ZADD', run, now + SLOT_RESERVE_MS, id)
        redis.call('ZADD', queued, head[2], id)
        if redis.call('ZCARD', queued) == 1 then
          redis.call('PUBLISH', qkey(job_prefix, 'wake'), 'q')
        end
        free = free - 1
      end
    end
  end
end

-- A job stops holding, or waiting for, a slot of its limit key ``lk`` (max ``maxc``): it
-- finished, failed, was retried, recovered, put back, canceled or deleted. Free its slot and
-- wake as many waiters as there are free slots (slots of dead workers free themselves: they
-- are scored by lease deadline).
local function limit_release(job_prefix, id, lk, maxc)
  local base = qkey(job_prefix, 'limit:') .. lk
  local run = base .. ':run'
  local now = now_ms()
  redis.call('ZREM', run, id)
  redis.call('ZREM', base .. ':wait', id)
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
  wake_waiters(job_prefix, base, math.max(1, positive(maxc, 1)) - redis.call('ZCARD', run), now)
end

-- limit_release for a job hash not read yet; call it before the hash may be deleted.
local function limit_gone(job_prefix, key, id)
  local f = redis.call('HMGET', key, 'limit_key', 'max_concurrency')
  if f[1] and f[2] then limit_release(job_prefix, id, f[1], f[2]) end
end

-- Token bucket of a rate limit (hash: tokens, ts in ms): refill at n per period up to burst,
-- then take a token. With none left the token is reserved ahead (the count goes negative) and
-- the time it comes due is returned: each job over the rate is delayed once, to its own turn.
local function take_token(bucket, n, period, burst, now)
  local b = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if not tokens or not ts then tokens, ts = burst, now end
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * n / period)
    ts = now
  end
  tokens = tokens - 1
  redis.call('HSET', bucket, 'tokens', tokens, 'ts', ts)
  -- A full bucket is the same as none: it expires once it would be full again.
  local full_in = math.min(math.ceil((burst - tokens) * period / n), 1e12)
  redis.call('PEXPIRE', bucket, intstr(full_in + 1000))
  if tokens >= 0 then return now end
  return now + math.ceil(-tokens * period / n)
end

-- How many jobs admit() parked in this call (see parked_enough).
local LIMITS = {parked = 0}

-- Claim-time check of a job's limits, from its hash as read (an HGETALL reply: no extra
-- command for jobs without limits). Returns true when it may start now (taking a slot and a
-- token). Otherwise the job is parked without holding a worker: when every slot of its key is
-- taken, in 'deferred' and the key's waiting set (a job of the key that stops frees a slot and
-- wakes it); when the rate is used up, in 'scheduled' until its reserved token is due (the
-- scheduler promotes it then, and it does not pay again).
local function admit(job_prefix, key, id, score, now, deadline, h)
  local limited = false
  for j = 1, #h, 2 do
    if h[j] == 'limit_key' then limited = true break end
  end
  if not limited then return true end
  local f = {}
  for j = 1, #h, 2 do f[h[j]] = h[j + 1] end
  local base = qkey(job_prefix, 'limit:') .. f.limit_key
  local run = base .. ':run'
  local maxc = positive(f.max_concurrency, nil)
  if maxc and maxc < 1 then maxc = 1 end
  local reserved = false
  if maxc then
    redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
    reserved = redis.call('ZSCORE', run, id)
    if not reserved and redis.call('ZCARD', run) >= maxc then
      redis.call('HSET', key, 'status', 'deferred', 'limit_wait', '1')
      redis.call('ZADD', qkey(job_prefix, 'deferred'), now, id)
      redis.call('ZADD', base .. ':wait', score, id)
      LIMITS.parked = LIMITS.parked + 1
      return false
    end
  end
  local n = positive(f.rate_n, nil)
  if n and f.rate_paid ~= '1' then
    local period, burst = positive(f.rate_ms, 1000), math.max(1, positive(f.rate_burst, 1))
    local due = take_token(base .. ':bucket', n, period, burst, now)
    if due > now then
      if reserved then
        redis.call('ZREM', run, id)
        wake_waiters(job_prefix, base, maxc - redis.call('ZCARD', run), now)
      end
      redis.call('HSET', key, 'status', 'scheduled', 'scheduled_for', due, 'rate_paid', '1')
      push_scheduled(qkey(job_prefix, 'scheduled'), qkey(job_prefix, 'wake'), id, due)
      LIMITS.parked = LIMITS.parked + 1
      return false
    end
  end
  if maxc then redis.call('ZADD', run, deadline, id) end
  if f.rate_paid then redis.call('HDEL', key, 'rate_paid') end
  return true
end

-- Jobs admit() parked leave room in a claim, which takes the next ones; past 256 parked jobs
-- in one call it stops and wakes the workers (this one too) to go on with another call, so
-- that each call stays short.
local function parked_enough(queued, job_prefix)
  if LIMITS.parked < 256 then return false end
  if redis.call('ZCARD', queued) > 0 then
    redis.call('PUBLISH', qkey(job_prefix, 'wake'), 'q')
  end
  return true
end
"""

# KEYS: job, [once]
# ARGV: id, base (the queue's key prefix, "<prefix>:{<queue>}"), priority, then with
#       dependencies run_anyway ('1'/'0'), without them 'new' when the id is one the client
#       just made at random (no job can hold it, so the check for an active job with this id
#       is skipped) and '0' otherwise; options: '' for a plain job, else the JSON list
#       [at_ms (0: none), delay_ms (0: none), once_tick ('': none; else KEYS[2] is the once
#       key), [ids the job depends on]]; then the values of the fields every job has, v, queue,
#       func, payload, timeout ('': none), result_ttl, failure_ttl (their names are here, not
#       sent: queue.py's ENQUEUE_FIELDS), then field, value, ... for the others.
# The queue's other keys are named from ``base`` here (same hash tag, so the same Cluster
# slot as the job key), and a script argument costs Redis about 1,000 instructions: a plain
# enqueue sends 5 arguments and its fields' values, not 20 key names, its options one by one,
# or the names of fields every job has.
# Returns {1, status} when created, {0, status} when a job with this id is still active, and
# {0, 'once'} when ``once`` already records this tick or a later one (cron: exactly once), and
# {0, 'missing', id} when a dependency does not exist (never enqueued, or expired).
ENQUEUE = r"""
local id, base = ARGV[1], ARGV[2]
local queued, scheduled, seq = base .. ':queued', base .. ':scheduled', base .. ':seq'
local canceled, deferred, channel = base .. ':canceled', base .. ':deferred', base .. ':wake'
local job_prefix = base .. ':job:'
local at, delay, tick, deps = 0, 0, '', {}
if ARGV[5] ~= '' then
  local o = cjson.decode(ARGV[5])
  at, delay, tick, deps = tonumber(o[1]) or 0, tonumber(o[2]) or 0, o[3], o[4]
end
local fields = {'v', ARGV[6], 'queue', ARGV[7], 'func', ARGV[8], 'payload', ARGV[9],
                'timeout', ARGV[10], 'result_ttl', ARGV[11], 'failure_ttl', ARGV[12]}
for i = 13, #ARGV do fields[#fields + 1] = ARGV[i] end
if tick ~= '' and tonumber(tick) <= (tonumber(redis.call('GET', KEYS[2])) or -1) then
  return {0, 'once'}
end
local st = ARGV[4] ~= 'new' and redis.call('HGET', KEYS[1], 'status')
if st == 'queued' or st == 'scheduled' or st == 'started' or st == 'deferred' then
  if tick ~= '' then redis.call('SET', KEYS[2], tick) end
  return {0, st}
end
-- The dependencies are checked before anything is written: an enqueue refused for a missing
-- one leaves the previous run of this id (its record, its result) and the once mark as they
-- were. Each distinct id counts once: its dependents set holds this job once and its end
-- settles it once. ``waits``: those not ended yet, in order. The id's own previous run is no
-- dependency (it is replaced here): missing, as it was when it was deleted first.
local pending, failed_dep, waits, seen = 0, nil, {}, {}
for _, d in ipairs(deps) do
  if not seen[d] then
    seen[d] = true
    local ds = d ~= id and redis.call('HGET', job_prefix .. d, 'status')
    if not ds then return {0, 'missing', d} end
    if ds == 'failed' or ds == 'canceled' then
      if ARGV[4] ~= '1' then failed_dep = d end
    elseif ds ~= 'finished' then
      pending = pending + 1
      waits[pending] = d
    end
  end
end
if tick ~= '' then redis.call('SET', KEYS[2], tick) end
if st then
  redis.call('ZREM', base .. ':finished', id)
  redis.call('ZREM', base .. ':failed', id)
  redis.call('ZREM', canceled, id)
  redis.call('DEL', KEYS[1], base .. ':done:' .. id)  -- with the old run's end token
end
local now = MANY.now or now_ms()
local due = 0
if at > 0 then due = at end
if delay > 0 then due = now + delay end
local status = 'queued'
if failed_dep then status = 'canceled'
elseif pending > 0 then status = 'deferred'
elseif due > now then status = 'scheduled' end
local worker, lease, was_empty = nil, 0, nil
if status == 'queued' then
  was_empty = not MANY.queued and redis.call('ZCARD', queued) == 0
  if was_empty then worker, lease = hand_off(base, id, now, fields) end
end
if worker then
  redis.call('HSET', KEYS[1], 'id', id, 'enqueued_at', now, 'status', 'started',
             'started_at', now, 'worker', worker, 'attempts', '1', 'pf', '1', unpack(fields))
  redis.call('ZADD', base .. ':started', now + lease, id)
  return {1, 'started'}
elseif status == 'scheduled' then
  redis.call('HSET', KEYS[1], 'id', id, 'enqueued_at', now, 'status', status,
             'scheduled_for', due, unpack(fields))
else
  redis.call('HSET', KEYS[1], 'id', id, 'enqueued_at', now, 'status', status, unpack(fields))
end
if failed_dep then
  local err = cjson.encode({type = 'DependencyFailed', traceback = '',
    message = 'canceled because its dependency ' .. failed_dep .. ' did not finish'})
  redis.call('HSET', KEYS[1], 'error', err)
  terminate(KEYS[1], canceled, id, 'canceled', now, redis.call('HGET', KEYS[1], 'failure_ttl'),
            false, '')
  return {1, 'canceled'}
end
if pending > 0 then
  -- 'dep_ids': the jobs it waits for, which settle() checks and unlink() reads.
  redis.call('HSET', KEYS[1], 'pending', pending, 'dep_any', ARGV[4],
             'dep_ids', cjson.encode(waits))
  redis.call('ZADD', deferred, now, id)
  for _, d in ipairs(waits) do
    redis.call('SADD', base .. ':dependents:' .. d, id)
    -- Tells FINISH that this job has dependents to settle (most jobs have none).
    redis.call('HSET', job_prefix .. d, 'deps', '1')
  end
  return {1, 'deferred'}
end
if status == 'scheduled' then
  push_scheduled(scheduled, channel, id, due)
  return {1, 'scheduled'}
end
push_queued(queued, seq, channel, id, ARGV[3], was_empty)
return {1, 'queued'}
"""

# KEYS: queued, started, [idle]
# ARGV: job_prefix, n, worker, lease_ms, run_now (jobs beyond the first run_now are prefetched:
#       marked 'pf' 1, so that a worker dying before it starts them costs them no death),
#       [offer_ttl_ms, offer member]: with KEYS[3], a claim that empties the queue (or finds
#       it empty) also offers to take the next job directly (see offer() and hand_off()).
# Returns {now_ms, {{id, HGETALL reply}, ...}}, one pair per claimed job. The hash is read
# before the claim's own writes: the caller sets status 'started', started_at = now_ms, worker,
# and attempts + 1 on its copy (what the script wrote), which saves a read per job.
# Fewer than n jobs returned means the queue is empty (workers rely on it to wait for a wake-up):
# an id without a job hash (expired, deleted, or a key of another type) is dropped and another
# is popped in its place.
CLAIM = r"""
local want = tonumber(ARGV[2])
local popped = redis.call('ZPOPMIN', KEYS[1], want)
if #popped == 0 then
  if KEYS[3] then return {offer(KEYS[1], KEYS[3], tonumber(ARGV[6]), ARGV[7], now_ms()), {}} end
  return {0, {}}
end
local now = now_ms()
local deadline = now + tonumber(ARGV[4])
local now_s, deadline_s = intstr(now), intstr(deadline)
local out = {}
local run_now = tonumber(ARGV[5]) or 0
ZADDS.on = true
while #popped > 0 do
  for i = 1, #popped, 2 do
    local id = popped[i]
    local key = ARGV[1] .. id
    -- pcall: a key of another type is no job (skipped, as a missing one), not a script error.
    local h = redis.pcall('HGETALL', key)
    if type(h) == 'table' and not h.err and #h > 0
        and admit(ARGV[1], key, id, popped[i + 1], now, deadline, h) then
      local pf = '0'
      if #out >= run_now then pf = '1' end
      -- attempts + 1, from the hash as read (no HINCRBY: one call less per job). Not an
      -- integer: counted as 0, in Redis and in the copy returned (the caller adds 1).
      local attempts = 0
      for j = 1, #h, 2 do
        if h[j] == 'attempts' then
          attempts = tonumber(h[j + 1])
          if not attempts or attempts ~= math.floor(attempts) or math.abs(attempts) > 2^52 then
            attempts = 0
            h[j + 1] = '0'
          end
          break
        end
      end
      local tries = '1'
      if attempts ~= 0 then tries = attempts + 1 end
      redis.call('HSET', key, 'status', 'started', 'started_at', now_s, 'worker', ARGV[3],
                 'pf', pf, 'attempts', tries)
      zadd(KEYS[2], deadline_s, id)
      out[#out + 1] = {id, h}
    end
  end
  if #out >= want or parked_enough(KEYS[1], ARGV[1]) then break end
  popped = redis.call('ZPOPMIN', KEYS[1], want - #out)
end
zadd_flush()
if KEYS[3] and #out < want then offer(KEYS[1], KEYS[3], tonumber(ARGV[6]), ARGV[7], now) end
return {now, out}
"""

# KEYS: started, queued, finished, deferred, seq, canceled, [idle]
# ARGV: worker, done_prefix, job_prefix, deps_prefix, channel, id, result, id, result, ...,
#       [offer_ttl_ms, offer member]
# Records many finished jobs in one call (a worker flushes what finished during the last round
# trip). Returns one code per job: 1 when recorded, 0 when the job no longer exists, -1 when
# another worker owns it (our lease expired and it was claimed again), -2 when it is in a state
# we may not finish (among them queued anew under the same id after ours was deleted). With
# KEYS[7], the worker also offers again to take the next job directly (see offer()), and
# OFFER's reply follows the codes: the offer goes with the outcome that freed the slot, saving a
# script call per job when jobs meet an idle worker one at a time.
FINISH = r"""
local worker = ARGV[1]
local now = now_ms()
local codes = {}
local last = #ARGV
if KEYS[7] then last = last - 2 end
local ended = {}  -- leave 'started' with one ZREM at the end
ZADDS.on = true
if last > 7 then STRS = {} end  -- more than one job: see intstr()
for i = 6, last, 2 do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  local f = redis.call('HMGET', key, 'status', 'worker', 'result_ttl', 'w', 'deps',
    'limit_key', 'max_concurrency')
  local st, code = f[1], 1
  if not st then
    code = 0
  elseif st == 'started' then
    if f[2] ~= worker then
      code = -1
    else
      ended[#ended + 1] = id
      if f[6] and f[7] then limit_release(ARGV[3], id, f[6], f[7]) end
    end
  elseif st == 'queued' and f[2] == '' then
    -- Our lease expired and recovery put it back (recovery and RELEASE leave worker ''); it
    -- has run now, so do not run it again. A queued job without that mark was enqueued anew
    -- (ENQUEUE writes no worker, REQUEUE deletes it) after ours was deleted or ended: not ours.
    redis.call('ZREM', KEYS[2], id)
  else
    code = -2
  end
  if code == 1 then
    terminate(key, KEYS[3], id, 'finished', now, f[3], f[4], ARGV[2], 'result', ARGV[i + 1])
    if f[5] then
      settle({ARGV[3], ARGV[4], KEYS[4], KEYS[2], KEYS[5], ARGV[5], KEYS[6], ARGV[2]}, id, true)
    end
  end
  codes[#codes + 1] = code
end
call_chunked('ZREM', KEYS[1], ended)
zadd_flush()
if KEYS[7] then
  codes[#codes + 1] = offer(KEYS[2], KEYS[7], tonumber(ARGV[last + 1]), ARGV[last + 2], now)
end
return codes
"""

# KEYS: job, started, queued, scheduled, failed, canceled, seq, deferred
# ARGV: id, worker, done_prefix, channel, error_json, errors_json, retry_delay_ms (-1: none),
#       final status ('failed' or 'canceled'), job_prefix, deps_prefix,
#       failure TTL ms overriding the hash's ('' : the hash's; for hashes that cannot be read)
# Returns the new status, or '' when the job is gone, owned by another worker or queued anew
# under the same id (see FINISH).
FAIL = r"""
local id = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
if st == 'started' then
  if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return '' end
  redis.call('ZREM', KEYS[2], id)
  limit_gone(ARGV[9], KEYS[1], id)
elseif st == 'queued' and redis.call('HGET', KEYS[1], 'worker') == '' then
  redis.call('ZREM', KEYS[3], id)  -- put back by recovery: see FINISH
else
  return ''
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'error', ARGV[5], 'errors', ARGV[6])
local delay = tonumber(ARGV[7])
if delay >= 0 then
  redis.call('HSET', KEYS[1], 'worker', '')
  if delay == 0 then
    redis.call('HSET', KEYS[1], 'status', 'queued')
    push_queued(KEYS[3], KEYS[7], ARGV[4], id, redis.call('HGET', KEYS[1], 'priority'))
    return 'queued'
  end
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'scheduled_for', now + delay)
  push_scheduled(KEYS[4], ARGV[4], id, now + delay)
  return 'scheduled'
end
local f = redis.call('HMGET', KEYS[1], 'failure_ttl', 'w')
if ARGV[11] and ARGV[11] ~= '' then f[1] = ARGV[11] end
local registry = KEYS[5]
if ARGV[8] == 'canceled' then registry = KEYS[6] end
terminate(KEYS[1], registry, id, ARGV[8], now, f[1], f[2], ARGV[3])
settle({ARGV[9], ARGV[10], KEYS[8], KEYS[3], KEYS[7], ARGV[4], KEYS[6], ARGV[3]}, id, false)
return ARGV[8]
"""

# KEYS: started, queued, failed, seq, scheduled, finished, canceled, deferred, stats
# ARGV: job_prefix, done_prefix, channel, max_deaths, limit, deps_prefix, trim ('1': also drop
#       expired ids from the terminal registries)
# Recovers jobs whose lease expired (their worker died), promotes due scheduled jobs, and drops
# expired ids from the terminal registries (their hashes expire by themselves).
# Returns {recovered, poisoned, promoted, next_due_ms (-1: none), now_ms}.
MAINTAIN = r"""
local now = now_ms()
local recovered, poisoned, promoted = 0, 0, 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  local prefetched, pf_deaths, cancel = false, 0, false
  if is_job(key) then
    limit_gone(ARGV[1], key, id)
    cancel = redis.call('HGET', key, 'cancel')
  end
  if not cancel and is_job(key) and redis.call('HGET', key, 'pf') == '1' then
    prefetched = true
    pf_deaths = bump(key, 'pf_deaths', 1)
  end
  if cancel then
    -- Its cancel was asked for while it ran, and its worker stopped renewing the lease
    -- before it ended: it ends canceled, as asked, and is not run again.
    local f = redis.call('HMGET', key, 'failure_ttl', 'w', 'func')
    terminate(key, KEYS[7], id, 'canceled', now, f[1], f[2], ARGV[2])
    settle({ARGV[1], ARGV[6], KEYS[8], KEYS[2], KEYS[4], ARGV[3], KEYS[7], ARGV[2]}, id, false)
    redis.call('HINCRBY', KEYS[9], 'o|canceled|' .. (f[3] or ''), 1)
  elseif prefetched and pf_deaths < tonumber(ARGV[4]) * 5 then
    -- Claimed ahead by a worker that died, most likely before starting it (the mark is
    -- cleared soon after a prefetched job starts): no death and no attempt count. A job that
    -- kills its worker as soon as it starts could escape poison detection this way, so such
    -- recoveries are bounded too, at five times MAX_DEATHS.
    bump(key, 'attempts', -1)
    redis.call('HSET', key, 'status', 'queued', 'worker', '', 'pf', '0')
    push_queued(KEYS[2], KEYS[4], ARGV[3], id, redis.call('HGET', key, 'priority'))
    recovered = recovered + 1
  elseif is_job(key) then
    local deaths = bump(key, 'deaths', 1)
    local worker = redis.call('HGET', key, 'worker') or ''
    if deaths >= tonumber(ARGV[4]) or prefetched then
      local err = cjson.encode({type = 'WorkerDied', message = 'the worker running this job died '
        .. deaths .. ' times (last: ' .. worker .. '); it is failed as a poison job',
        traceback = '', worker = worker})
      local errors = redis.call('HGET', key, 'errors')
      local list = {}
      if errors and errors ~= '' then
        local ok, decoded = pcall(cjson.decode, errors)
        if ok and type(decoded) == 'table' then list = decoded end
      end
      list[#list + 1] = cjson.decode(err)
      local ok, encoded = pcall(cjson.encode, list)  -- a hostile 'errors' may not re-encode
      if not ok then encoded = '[' .. err .. ']' end
      redis.call('HSET', key, 'error', err, 'errors', encoded)
      local f = redis.call('HMGET', key, 'failure_ttl', 'w')
      terminate(key, KEYS[3], id, 'failed', now, f[1], f[2], ARGV[2])
      settle({ARGV[1], ARGV[6], KEYS[8], KEYS[2], KEYS[4], ARGV[3], KEYS[7], ARGV[2]}, id, false)
      redis.call('HINCRBY', KEYS[9], 'o|failed|' .. (redis.call('HGET', key, 'func') or ''), 1)
      poisoned = poisoned + 1
    else
      redis.call('HINCRBY', KEYS[9], 'o|recovered|' .. (redis.call('HGET', key, 'func') or ''), 1)
      redis.call('HSET', key, 'status', 'queued', 'worker', '')
      push_queued(KEYS[2], KEYS[4], ARGV[3], id, redis.call('HGET', key, 'priority'))
      recovered = recovered + 1
    end
  end
end
local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
if head[2] and tonumber(head[2]) <= now then
  local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[5], id)
    local key = ARGV[1] .. id
    if is_job(key) then
      redis.call('HSET', key, 'status', 'queued')
      push_queued(KEYS[2], KEYS[4], ARGV[3], id, redis.call('HGET', key, 'priority'))
      promoted = promoted + 1
    end
  end
  head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
end
if ARGV[7] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
end
local next_due = -1
if head[2] then next_due = tonumber(head[2]) end
return {recovered, poisoned, promoted, next_due, now}
"""

# KEYS: queued, idle
# ARGV: offer_ttl_ms, member
# A worker offers again to take a job directly (its last offer went with the job it got).
# Returns 0 when the queue is not empty (the worker claims instead), else 1.
OFFER = r"""
return offer(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], now_ms())
"""

# KEYS: started
# ARGV: job_prefix, worker, lease_ms, id, ...
# Extends the leases this worker still owns. Returns {lost ids, ids whose cancel was requested}.
RENEW = r"""
local now = now_ms()
local deadline = intstr(now + tonumber(ARGV[3]))
local lost, cancel = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', ARGV[1] .. id, 'worker', 'status', 'cancel', 'limit_key',
    'max_concurrency')
  if f[1] == ARGV[2] and f[2] == 'started' then
    redis.call('ZADD', KEYS[1], deadline, id)
    if f[4] and f[5] then
      redis.call('ZADD', qkey(ARGV[1], 'limit:') .. f[4] .. ':run', deadline, id)
    end
    if f[3] then cancel[#cancel + 1] = id end
  elseif f[2] == 'started' or f[2] == 'queued' then
    -- Recovered (queued again, or claimed by another worker). A job that ended meanwhile
    -- (its outcome was written after the renewal list was taken) is not lost.
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
"""

# KEYS: stats
# ARGV: field, increment, ...
# Adds a worker's batched job counters (see ``counters``) to the queue's stats hash.
STATS = r"""
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: job
# ARGV: worker, field, value, ...
# A running job's progress and meta, written only while this worker still runs it (a late
# write must not bring back a job that ended, expired or moved to another worker).
PROGRESS = r"""
local f = redis.call('HMGET', KEYS[1], 'status', 'worker')
if f[1] ~= 'started' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# KEYS: job, started, queued, seq, canceled, deferred
# ARGV: id, worker, channel, done_prefix, deps_prefix
# Puts a job this worker runs back on its queue (shutdown); the attempt does not count. A job
# whose cancel was asked for ends canceled instead (returns 2).
RELEASE = r"""
local f = redis.call('HMGET', KEYS[1], 'status', 'worker', 'priority', 'cancel', 'failure_ttl',
  'w')
if f[1] ~= 'started' or f[2] ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
local job_prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
limit_gone(job_prefix, KEYS[1], ARGV[1])
if f[4] then
  terminate(KEYS[1], KEYS[5], ARGV[1], 'canceled', now_ms(), f[5], f[6], ARGV[4])
  settle({job_prefix, ARGV[5], KEYS[6], KEYS[3], KEYS[4], ARGV[3], KEYS[5], ARGV[4]}, ARGV[1],
    false)
  return 2
end
bump(KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '')
push_queued(KEYS[3], KEYS[4], ARGV[3], ARGV[1], f[3])
return 1
"""

# KEYS: job, queued, scheduled, deferred, canceled, seq
# ARGV: id, done_prefix, channel, job_prefix, deps_prefix
# Cancels a waiting job at once; flags a started one and tells its worker (a 'c:<id>' message;
# lease renewals report the flag too, should the message be missed). Returns the status after.
CANCEL = r"""
local id = ARGV[1]
if not is_job(KEYS[1]) then return '' end  -- a key of another type is no job (no WRONGTYPE)
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
local from = nil
if st == 'queued' then from = KEYS[2]
elseif st == 'scheduled' then from = KEYS[3]
elseif st == 'deferred' then from = KEYS[4] end
if from then
  redis.call('ZREM', from, id)
  limit_gone(ARGV[4], KEYS[1], id)
  local f = redis.call('HMGET', KEYS[1], 'failure_ttl', 'w', 'dep_ids')
  if st == 'deferred' then unlink(ARGV[5], id, f[3]) end
  terminate(KEYS[1], KEYS[5], id, 'canceled', now_ms(), f[1], f[2], ARGV[2])
  settle({ARGV[4], ARGV[5], KEYS[4], KEYS[2], KEYS[6], ARGV[3], KEYS[5], ARGV[2]}, id, false)
  return 'canceled'
end
if st == 'started' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', ARGV[3], 'c:' .. id)
end
return st
"""

# KEYS: job, failed, canceled, queued, seq, done list
# ARGV: id, channel
# Puts a failed or canceled job back on its queue. Returns 1 when requeued.
REQUEUE = r"""
if not is_job(KEYS[1]) then return 0 end  -- a key of another type is no job (no WRONGTYPE)
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'failed' then redis.call('ZREM', KEYS[2], ARGV[1])
elseif st == 'canceled' then redis.call('ZREM', KEYS[3], ARGV[1])
else return 0 end
redis.call('DEL', KEYS[6])  -- the old end's token must not wake waiters of the new run
redis.call('PERSIST', KEYS[1])
redis.call('HDEL', KEYS[1], 'ended_at', 'cancel', 'worker')
redis.call('HSET', KEYS[1], 'status', 'queued', 'deaths', 0)
push_queued(KEYS[4], KEYS[5], ARGV[2], ARGV[1], redis.call('HGET', KEYS[1], 'priority'))
return 1
"""

# KEYS: job, scheduled, queued, started, deferred, finished, failed, canceled, seq
# ARGV: id, job_prefix, deps_prefix, channel, done_prefix
# A deleted job never finishes: jobs deferred on it are settled as if it had failed.
DELETE = r"""
for i = 2, 8 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if is_job(KEYS[1]) then
  limit_gone(ARGV[2], KEYS[1], ARGV[1])
  local f = redis.call('HMGET', KEYS[1], 'status', 'dep_ids')
  if f[1] == 'deferred' then unlink(ARGV[3], ARGV[1], f[2]) end
end
local existed = redis.call('DEL', KEYS[1])
settle({ARGV[2], ARGV[3], KEYS[5], KEYS[3], KEYS[9], ARGV[4], KEYS[8], ARGV[5]}, ARGV[1], false)
return existed
"""

# KEYS: job, done list
# Returns the job's fields when it has ended, otherwise registers a waiter and returns its
# status, or nil when the job does not exist. The caller sends its blocking BLMOVE on the done
# list in the same pipeline, so an ended job also gets a token there (the BLMOVE returns at
# once), as does a missing one. That placeholder outlives the call: while the job is active,
# whatever the list holds is stale (an end token is pushed as the job ends, and an enqueue that
# reuses the id of an ended job deletes the old one), so it is deleted before the BLMOVE, which
# would otherwise take the placeholder of a wait made before the job existed (a handle from
# ``.delay()`` inside a transaction, before the commit) for the job's end.
WATCH = r"""
local st = redis.call('HGET', KEYS[1], 'status')
if st and st ~= 'finished' and st ~= 'failed' and st ~= 'canceled' then
  redis.call('HSETNX', KEYS[1], 'w', '2')  -- a '1' stays: see terminate()
  redis.call('DEL', KEYS[2])
  return st
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], 60000)
end
if not st then return false end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: leader
# ARGV: name, lease_ms
# Takes or keeps the cron leadership; returns 1 when this scheduler leads.
LEAD = r"""
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: workers (sorted set), worker (hash)
# ARGV: name, ttl_ms, forget_after_ms (0: do not prune now), field, value, ...
# Records a worker's heartbeat: its score in the set is the beat's time. The hash is written
# only when fields are given (the worker sends them when they changed); workers silent for
# forget_after_ms are dropped from the set when asked. An idle worker's beat is 4 commands.
HEARTBEAT = r"""
local now = now_ms()
if #ARGV > 3 then redis.call('HSET', KEYS[2], 'last_beat', now, unpack(ARGV, 4)) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
end
return now
"""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    #: SHA1 of the source, computed once: every EVALSHA on the hot path sends it.
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _helpers(prelude: str) -> list[tuple[str, str]]:
    """The prelude's top-level definitions, in order, each with the comment above it."""
    chunks: list[list[str]] = []
    for line in prelude.strip("\n").split("\n"):
        starts = line.startswith(("--", "local "))
        if starts and not (chunks and chunks[-1][-1].startswith("--")):
            chunks.append([])
        chunks[-1].append(line)
    out = []
    for chunk in chunks:
        text = "\n".join(chunk)
        m = re.search(r"^local (?:function )?(\w+)", text, re.M)
        if m is None:  # pragma: no cover - the prelude holds only definitions
            raise ValueError(f"the Lua prelude holds something that is no definition: {text!r}")
        out.append((m.group(1), text))
    return out


_HELPERS = _helpers(_PRELUDE)


def _with_helpers(body: str) -> str:
    """``body`` preceded by the prelude helpers it uses, directly or through another helper.

    A script runs its whole text on every call, so each helper it carries is a closure built
    and collected again per call: with the whole prelude, ENQUEUE took about 3 us more of
    Redis time per call (one by one, median 28.9 against 25.8 us)."""
    used: set[str] = set()
    text = body
    while True:
        code = re.sub(r"--[^\n]*", "", text)  # a name in a comment is no use
        new = {name for name, _ in _HELPERS
               if name not in used and re.search(rf"\b{name}\b", code)}
        if not new:
            break
        used |= new
        text = "\n".join(src for name, src in _HELPERS if name in new)
    return "".join(src + "\n" for name, src in _HELPERS if name in used) + body


def _script(name: str, body: str) -> Script:
    return Script(name, _with_helpers(body))


# A job enqueued onto an empty queue goes straight to a worker that offered to take one (see
# offer() in the prelude): the script leases it to that worker, as CLAIM would, and publishes
# the job's fields on the worker's own channel. The worker starts it on that message, without
# the wake-up and claim round trip (two of the six one-way trips of an idle enqueue-to-result).
# PUBLISH counts the receivers: none means that worker is gone (its connection closed), so the
# next offer is tried, and at worst the job is queued as usual. The job is marked prefetched
# ('pf'), as a claimed job not yet started is: if the message is lost with its worker, the
# lease expires and the job is queued again without counting a death. Jobs with limits take
# the claim path, where their limits are checked. Not on a Cluster: there PUBLISH counts only
# the receivers on the queue's node (workers do not offer there).
_HAND_OFF_FN = r"""
-- Called only when the queue is empty: a job never overtakes those already waiting.
local function hand_off(base, id, now, fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'limit_key' then return nil end
  end
  local idle = base .. ':idle'
  for _ = 1, 3 do
    local top = redis.call('ZPOPMAX', idle)
    if #top == 0 then return nil end
    if tonumber(top[2]) < now then
      redis.call('DEL', idle)  -- the latest offer has lapsed, so have all the others
      return nil
    end
    local sep = string.find(top[1], '|', 1, true)
    if sep then
      local lease = tonumber(string.sub(top[1], 1, sep - 1)) or 30000
      local worker = string.sub(top[1], sep + 1)
      -- The message: the claim time, then the job's fields as enqueued, packed by cmsgpack
      -- (as a waiter's token, see terminate()). Workers of earlier versions listen for
      -- netstrings on another channel: tried when no worker listens on this one.
      local at = intstr(now)
      local msg = {at, 'id', id, 'enqueued_at', at, 'status', 'queued'}
      for _, v in ipairs(fields) do msg[#msg + 1] = v end
      if redis.call('PUBLISH', base .. ':to2:' .. worker, cmsgpack.pack(msg)) > 0 then
        return worker, lease
      end
      if redis.call('PUBLISH', base .. ':to:' .. worker, netstrings(msg)) > 0 then
        return worker, lease
      end
    end
  end
  return nil
end
"""

# ENQUEUE as a function of (KEYS, ARGV), so that one script call can enqueue many jobs.
_ENQUEUE_FN = _HAND_OFF_FN + "local function enqueue(KEYS, ARGV)\n" + ENQUEUE + "end\n"

# KEYS: the job key of each job; ARGV: for each job, how many ENQUEUE arguments it has, then
# those arguments (see ENQUEUE; no ``once`` key). Returns ENQUEUE's reply for each job, in
# order. Bulk enqueues: one script call and one reply for many jobs, instead of one each.
ENQUEUE_MANY = r"""
local out, pos = {}, 1
-- All jobs of one call belong to one queue: ARGV[3] is the first job's base.
MANY.on, MANY.now, ZADDS.on = true, now_ms(), true
MANY.seq = redis.call('INCRBY', ARGV[3] .. ':seq', #KEYS) - #KEYS
for i = 1, #KEYS do
  local n = tonumber(ARGV[pos])
  local argv = {}
  for j = 1, n do argv[j] = ARGV[pos + j] end
  pos = pos + n + 1
  out[i] = enqueue({KEYS[i]}, argv)
end
zadd_flush()
return out
"""

# The common enqueue, first in ENQUEUE_SCRIPT: a plain job (no ``once``, no dependencies, no
# delay) with a new id onto a queue where jobs already wait, so there is no worker to wake and
# no hand-off. It makes the calls the general path would make for that job (ZCARD, HGET unless
# the id is 'new', TIME, HSET, INCR, ZADD; the same fields, score and reply) before any helper
# is defined: a script's whole text runs on every call, and building the general path's helpers
# and tables, with its numbers formatted by Redis, took a fifth of this enqueue's Redis
# instructions (callgrind, Redis 7.0: 132,431 -> 105,820 per job; 102,207 without the HGET;
# 94,871 with 12 arguments instead of 22, see ENQUEUE's). Any other job falls through to the
# general path, having cost it one ZCARD (or, for an id the caller chose, a ZCARD and an HGET).
_ENQUEUE_FAST = r"""
if ARGV[5] == '' then
  local queued = ARGV[2] .. ':queued'
  if redis.call('ZCARD', queued) > 0
      and (ARGV[4] == 'new' or not redis.call('HGET', KEYS[1], 'status')) then
    local t = redis.call('TIME')
    -- now_ms() as a string, from TIME's strings: seconds, then the microseconds' first 3 of 6
    -- digits (Redis before 7.2 formats a number argument with '%.17g', a costly conversion).
    local now = t[1] .. string.sub('00000' .. t[2], -6, -4)
    redis.call('HSET', KEYS[1], 'id', ARGV[1], 'enqueued_at', now, 'status', 'queued',
               'v', ARGV[6], 'queue', ARGV[7], 'func', ARGV[8], 'payload', ARGV[9],
               'timeout', ARGV[10], 'result_ttl', ARGV[11], 'failure_ttl', ARGV[12],
               unpack(ARGV, 13))
    -- The score of push_queued().
    local p = tonumber(ARGV[3]) or 0
    if p ~= p then p = 0 end
    if p > 100 then p = 100 elseif p < -100 then p = -100 end
    local n = redis.call('INCR', ARGV[2] .. ':seq')
    redis.call('ZADD', queued, string.format('%d', (100 - p) * 17592186044416 + n), ARGV[1])
    return {1, 'queued'}
  end
end
"""

ENQUEUE_SCRIPT = Script(
    "enqueue", _ENQUEUE_FAST + _with_helpers(_ENQUEUE_FN + "return enqueue(KEYS, ARGV)\n"))
ENQUEUE_MANY_SCRIPT = _script("enqueue_many", _ENQUEUE_FN + ENQUEUE_MANY)
CLAIM_SCRIPT = _script("claim", CLAIM)
FINISH_SCRIPT = _script("finish", FINISH)
FAIL_SCRIPT = _script("fail", FAIL)
MAINTAIN_SCRIPT = _script("maintain", MAINTAIN)
RENEW_SCRIPT = _script("renew", RENEW)
OFFER_SCRIPT = _script("offer", OFFER)
RELEASE_SCRIPT = _script("release", RELEASE)
CANCEL_SCRIPT = _script("cancel", CANCEL)
REQUEUE_SCRIPT = _script("requeue", REQUEUE)
DELETE_SCRIPT = _script("delete", DELETE)
WATCH_SCRIPT = _script("watch", WATCH)
HEARTBEAT_SCRIPT = _script("heartbeat", HEARTBEAT)
LEAD_SCRIPT = _script("lead", LEAD)
STATS_SCRIPT = Script("stats", STATS)
PROGRESS_SCRIPT = Script("progress", PROGRESS)

ALL_SCRIPTS = (
    ENQUEUE_SCRIPT, ENQUEUE_MANY_SCRIPT, CLAIM_SCRIPT, FINISH_SCRIPT, FAIL_SCRIPT,
    MAINTAIN_SCRIPT, RENEW_SCRIPT, OFFER_SCRIPT, RELEASE_SCRIPT, CANCEL_SCRIPT, REQUEUE_SCRIPT,
    DELETE_SCRIPT, WATCH_SCRIPT, HEARTBEAT_SCRIPT, LEAD_SCRIPT, STATS_SCRIPT, PROGRESS_SCRIPT,
)
