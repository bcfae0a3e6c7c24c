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
from dataclasses import dataclass, field

# Shared helpers, prepended to every script.
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

-- Queued jobs are scored so that ZPOPMIN takes the highest priority first, FIFO within one
-- priority: (100 - priority) * 2^44 + sequence. Priorities are clamped to [-100, 100].
local function push_queued(queued, seq, channel, id, priority)
  local p = tonumber(priority) or 0
  if p > 100 then p = 100 elseif p < -100 then p = -100 end
  local n = redis.call('INCR', seq)
  redis.call('ZADD', queued, (100 - p) * 17592186044416 + n, id)
  -- Wake idle workers only when the queue goes from empty to non-empty: a worker that finds
  -- a queue empty waits for this message, and busy workers are not flooded.
  if redis.call('ZCARD', queued) == 1 then redis.call('PUBLISH', channel, 'q') end
end

-- A scheduled job that became the earliest one wakes the timers that sleep until it is due.
local function push_scheduled(scheduled, channel, id, due)
  redis.call('ZADD', scheduled, due, id)
  local head = redis.call('ZRANGE', scheduled, 0, 0)
  if head[1] == id then redis.call('PUBLISH', channel, 's') end
end

-- Move a job hash into a terminal state: registry scored by expiry, hash expiring with it.
-- Expired ids leave the registries in MAINTAIN (every heartbeat), not here on every job.
local function terminate(key, registry, id, status, now, ttl)
  redis.call('HSET', key, 'status', status, 'ended_at', now)
  ttl = tonumber(ttl) or 0
  if ttl < 0 then
    redis.call('PERSIST', key)
    redis.call('ZADD', registry, '+inf', id)
  elseif ttl == 0 then
    redis.call('DEL', key)
  else
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', registry, now + ttl, id)
  end
end

-- Wake clients blocked in Job.get(): only when one registered (field 'w'), so the common
-- case costs nothing. Waiters rotate the list with BLMOVE and never consume the token.
local function notify(key, done_prefix, id, waited, ttl)
  if waited then
    local done = done_prefix .. id
    redis.call('RPUSH', done, '1')
    local t = tonumber(ttl) or 0
    if t < 60000 then t = 60000 end
    redis.call('PEXPIRE', done, t)
  end
end

-- A job ended: settle the jobs deferred on it (always in the same queue). ``ok`` (finished):
-- each dependent's count of pending dependencies drops, and at zero it is queued. Not ok
-- (failed, canceled, deleted): each dependent is canceled, unless it asked to run anyway, and
-- so, in turn, are its own dependents.
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
      if is_job(key) and redis.call('HGET', key, 'status') == 'deferred' then
        if item[2] or redis.call('HGET', key, 'dep_any') == '1' then
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
          local f = redis.call('HMGET', key, 'failure_ttl', 'w')
          terminate(key, q[7], dep, 'canceled', now_ms(), f[1])
          notify(key, q[8], dep, f[2], f[1])
          stack[#stack + 1] = {dep, false}
        end
      end
    end
  end
end
"""

# KEYS: job, queued, scheduled, finished, failed, canceled, seq, once, deferred
# ARGV: id, channel, at_ms (0: none), delay_ms (0: none), priority, once_tick ('' : none),
#       depends_on (JSON list of ids, '' : none), run_anyway ('1'/'0'), job_prefix,
#       deps_prefix, done_prefix, field, value, ...
# Returns {1, status} when created, {0, status} when a job with this id is still active, and
# {0, 'once'} when ``once`` already records this tick or a later one (cron: exactly once), and
# {0, 'missing', id} when a dependency does not exist (never enqueued, or expired).
ENQUEUE = r"""
local id = ARGV[1]
if ARGV[6] ~= '' then
  local tick = tonumber(ARGV[6])
  if tick <= (tonumber(redis.call('GET', KEYS[8])) or -1) then return {0, 'once'} end
  redis.call('SET', KEYS[8], ARGV[6])
end
local st = redis.call('HGET', KEYS[1], 'status')
if st then
  if st == 'queued' or st == 'scheduled' or st == 'started' or st == 'deferred' then
    return {0, st}
  end
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZREM', KEYS[6], id)
  redis.call('DEL', KEYS[1])
end
local now = now_ms()
local pending, failed_dep = 0, nil
if ARGV[7] ~= '' then
  local deps = cjson.decode(ARGV[7])
  for _, d in ipairs(deps) do
    local ds = redis.call('HGET', ARGV[9] .. d, 'status')
    if not ds then return {0, 'missing', d} end
    if ds == 'failed' or ds == 'canceled' then
      if ARGV[8] ~= '1' then failed_dep = d end
    elseif ds ~= 'finished' then
      pending = pending + 1
    end
  end
end
local due = 0
if tonumber(ARGV[3]) > 0 then due = tonumber(ARGV[3]) end
if tonumber(ARGV[4]) > 0 then due = now + tonumber(ARGV[4]) end
redis.call('HSET', KEYS[1], 'enqueued_at', now, unpack(ARGV, 12))
if failed_dep then
  local err = cjson.encode({type = 'DependencyFailed', traceback = '',
    message = 'canceled because its dependency ' .. failed_dep .. ' did not finish'})
  redis.call('HSET', KEYS[1], 'error', err)
  terminate(KEYS[1], KEYS[6], id, 'canceled', now, redis.call('HGET', KEYS[1], 'failure_ttl'))
  return {1, 'canceled'}
end
if pending > 0 then
  redis.call('HSET', KEYS[1], 'status', 'deferred', 'pending', pending, 'dep_any', ARGV[8])
  redis.call('ZADD', KEYS[9], now, id)
  for _, d in ipairs(cjson.decode(ARGV[7])) do
    local ds = redis.call('HGET', ARGV[9] .. d, 'status')
    if ds ~= 'finished' and ds ~= 'failed' and ds ~= 'canceled' then
      redis.call('SADD', ARGV[10] .. d, id)
    end
  end
  return {1, 'deferred'}
end
if due > now then
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'scheduled_for', due)
  push_scheduled(KEYS[3], ARGV[2], id, due)
  return {1, 'scheduled'}
end
redis.call('HSET', KEYS[1], 'status', 'queued')
push_queued(KEYS[2], KEYS[7], ARGV[2], id, ARGV[5])
return {1, 'queued'}
"""

# KEYS: queued, started
# ARGV: job_prefix, n, worker, lease_ms
# Returns a list of {id, HGETALL reply} pairs, one per claimed job.
CLAIM = r"""
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
if #popped == 0 then return {} end
local now = now_ms()
local deadline = now + tonumber(ARGV[4])
local out = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = ARGV[1] .. id
  if is_job(key) then
    redis.call('HSET', key, 'status', 'started', 'started_at', now, 'worker', ARGV[3])
    bump(key, 'attempts', 1)
    redis.call('ZADD', KEYS[2], deadline, id)
    out[#out + 1] = {id, redis.call('HGETALL', key)}
  end
end
return out
"""

# KEYS: job, started, queued, finished, deferred, seq, canceled
# ARGV: id, worker, done_prefix, result, job_prefix, deps_prefix, channel
# Returns 1 when recorded, 0 when the job no longer exists, -1 when another worker owns it
# (our lease expired and it was claimed again), -2 when it is in a state we may not finish.
FINISH = r"""
local id = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st == 'started' then
  if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return -1 end
  redis.call('ZREM', KEYS[2], id)
elseif st == 'queued' then
  -- Our lease expired and recovery put it back; it has run now, so do not run it again.
  redis.call('ZREM', KEYS[3], id)
else
  return -2
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'result', ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'result_ttl', 'w')
terminate(KEYS[1], KEYS[4], id, 'finished', now, f[1])
notify(KEYS[1], ARGV[3], id, f[2], f[1])
settle({ARGV[5], ARGV[6], KEYS[5], KEYS[3], KEYS[6], ARGV[7], KEYS[7], ARGV[3]}, id, true)
return 1
"""

# KEYS: job, started, queued, scheduled, failed, canceled, seq, deferred
# ARGV: id, worker, done_prefix, channel, error_json, errors_json, retry_delay_ms (-1: none),
#       final status ('failed' or 'canceled'), job_prefix, deps_prefix
# Returns the new status, or '' when the job is gone or owned by another worker.
FAIL = r"""
local id = ARGV[1]
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
if st == 'started' then
  if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return '' end
  redis.call('ZREM', KEYS[2], id)
elseif st == 'queued' then
  redis.call('ZREM', KEYS[3], id)
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
local registry = KEYS[5]
if ARGV[8] == 'canceled' then registry = KEYS[6] end
terminate(KEYS[1], registry, id, ARGV[8], now, f[1])
notify(KEYS[1], ARGV[3], id, f[2], f[1])
settle({ARGV[9], ARGV[10], KEYS[8], KEYS[3], KEYS[7], ARGV[4], KEYS[6], ARGV[3]}, id, false)
return ARGV[8]
"""

# KEYS: started, queued, failed, seq, scheduled, finished, canceled, deferred
# ARGV: job_prefix, done_prefix, channel, max_deaths, limit, deps_prefix
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
  if is_job(key) then
    local deaths = bump(key, 'deaths', 1)
    local worker = redis.call('HGET', key, 'worker') or ''
    if deaths >= tonumber(ARGV[4]) then
      local err = cjson.encode({type = 'WorkerDied', message = 'the worker running this job died '
        .. deaths .. ' times (last: ' .. worker .. '); it is failed as a poison job',
        traceback = ''})
      local errors = redis.call('HGET', key, 'errors')
      local list = {}
      if errors and errors ~= '' then
        local ok, decoded = pcall(cjson.decode, errors)
        if ok and type(decoded) == 'table' then list = decoded end
      end
      list[#list + 1] = cjson.decode(err)
      redis.call('HSET', key, 'error', err, 'errors', cjson.encode(list))
      local f = redis.call('HMGET', key, 'failure_ttl', 'w')
      terminate(key, KEYS[3], id, 'failed', now, f[1])
      notify(key, ARGV[2], id, f[2], f[1])
      settle({ARGV[1], ARGV[6], KEYS[8], KEYS[2], KEYS[4], ARGV[3], KEYS[7], ARGV[2]}, id, false)
      poisoned = poisoned + 1
    else
      redis.call('HSET', key, 'status', 'queued', 'worker', '')
      push_queued(KEYS[2], KEYS[4], ARGV[3], id, redis.call('HGET', key, 'priority'))
      recovered = recovered + 1
    end
  end
end
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
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
local next_due = -1
if head[2] then next_due = tonumber(head[2]) end
return {recovered, poisoned, promoted, next_due, now}
"""

# KEYS: started
# ARGV: job_prefix, worker, lease_ms, id, ...
# Extends the leases this worker still owns. Returns {lost ids, ids whose cancel was requested}.
RENEW = r"""
local now = now_ms()
local deadline = now + tonumber(ARGV[3])
local lost, cancel = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', ARGV[1] .. id, 'worker', 'status', 'cancel')
  if f[1] == ARGV[2] and f[2] == 'started' then
    redis.call('ZADD', KEYS[1], deadline, id)
    if f[3] then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
"""

# KEYS: job, started, queued, seq
# ARGV: id, worker, channel
# Puts a job this worker runs back on its queue (shutdown); the attempt does not count.
RELEASE = r"""
local f = redis.call('HMGET', KEYS[1], 'status', 'worker', 'priority')
if f[1] ~= 'started' or f[2] ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
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
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
local from = nil
if st == 'queued' then from = KEYS[2]
elseif st == 'scheduled' then from = KEYS[3]
elseif st == 'deferred' then from = KEYS[4] end
if from then
  redis.call('ZREM', from, id)
  local f = redis.call('HMGET', KEYS[1], 'failure_ttl', 'w')
  terminate(KEYS[1], KEYS[5], id, 'canceled', now_ms(), f[1])
  notify(KEYS[1], ARGV[2], id, f[2], f[1])
  settle({ARGV[4], ARGV[5], KEYS[4], KEYS[2], KEYS[6], ARGV[3], KEYS[5], ARGV[2]}, id, false)
  return 'canceled'
end
if st == 'started' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', ARGV[3], 'c:' .. id)
end
return st
"""

# KEYS: job, failed, canceled, queued, seq
# ARGV: id, channel
# Puts a failed or canceled job back on its queue. Returns 1 when requeued.
REQUEUE = r"""
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'failed' then redis.call('ZREM', KEYS[2], ARGV[1])
elseif st == 'canceled' then redis.call('ZREM', KEYS[3], ARGV[1])
else return 0 end
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
local existed = redis.call('DEL', KEYS[1])
settle({ARGV[2], ARGV[3], KEYS[5], KEYS[3], KEYS[9], ARGV[4], KEYS[8], ARGV[5]}, ARGV[1], false)
return existed
"""

# KEYS: job
# Returns the job's fields when it has ended, otherwise registers a waiter and returns its
# status, or nil when the job does not exist.
WATCH = r"""
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return false end
if st == 'finished' or st == 'failed' or st == 'canceled' then
  return redis.call('HGETALL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'w', '1')
return st
"""

# KEYS: leader
# ARGV: name, lease_ms
# Takes or keeps the cron leadership; returns 1 when this scheduler leads.
LEAD = r"""
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""

# KEYS: workers (sorted set), worker (hash)
# ARGV: name, ttl_ms, forget_after_ms, field, value, ...
# Records a worker's heartbeat; workers silent for forget_after_ms are dropped from the set.
HEARTBEAT = r"""
local now = now_ms()
redis.call('HSET', KEYS[2], 'last_beat', now, unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
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


def _script(name: str, body: str) -> Script:
    return Script(name, _PRELUDE + body)


ENQUEUE_SCRIPT = _script("enqueue", ENQUEUE)
CLAIM_SCRIPT = _script("claim", CLAIM)
FINISH_SCRIPT = _script("finish", FINISH)
FAIL_SCRIPT = _script("fail", FAIL)
MAINTAIN_SCRIPT = _script("maintain", MAINTAIN)
RENEW_SCRIPT = _script("renew", RENEW)
RELEASE_SCRIPT = _script("release", RELEASE)
CANCEL_SCRIPT = _script("cancel", CANCEL)
REQUEUE_SCRIPT = _script("requeue", REQUEUE)
DELETE_SCRIPT = _script("delete", DELETE)
WATCH_SCRIPT = _script("watch", WATCH)
HEARTBEAT_SCRIPT = _script("heartbeat", HEARTBEAT)
LEAD_SCRIPT = _script("lead", LEAD)

ALL_SCRIPTS = (
    ENQUEUE_SCRIPT, CLAIM_SCRIPT, FINISH_SCRIPT, FAIL_SCRIPT, MAINTAIN_SCRIPT, RENEW_SCRIPT,
    RELEASE_SCRIPT, CANCEL_SCRIPT, REQUEUE_SCRIPT, DELETE_SCRIPT, WATCH_SCRIPT,
    HEARTBEAT_SCRIPT, LEAD_SCRIPT,
)
