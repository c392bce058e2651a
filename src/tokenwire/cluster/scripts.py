"""The Lua scripts that make a turn's writes safe: each runs atomically inside Redis.

Fencing: a turn's ``run`` hash names the one worker allowed to write (``owner``, a token that
changes with every claim). A worker that lost its claim (it stalled, and another worker took
the turn over) finds another token there and writes nothing. ``head`` makes a write idempotent:
events at or below it are skipped, so a batch retried after a lost reply is never doubled.
"""

from __future__ import annotations

APPEND = """
-- KEYS: events, run, meta, active, the tenant's turns. ARGV: token, maxlen, ttl_ms (0 while
-- running: > 0 when the batch holds the terminal event), stream id, then seq, json pairs.
local owner = redis.call('HGET', KEYS[2], 'owner')
if not owner then return -2 end
if owner ~= ARGV[1] then return -1 end
local head = tonumber(redis.call('HGET', KEYS[2], 'head') or '0')
for i = 5, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > head then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', ARGV[i + 1])
    head = seq
  end
end
redis.call('HSET', KEYS[2], 'head', head)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  -- Whoever writes the terminal (the worker, a takeover, a gateway) ends the turn's listing
  -- with it; 'ended' keeps a late MARK_ACTIVE from listing it again.
  redis.call('HSET', KEYS[2], 'ended', 1)
  redis.call('HDEL', KEYS[4], ARGV[4])
  -- ...and frees its slot in its tenant's share.
  redis.call('SREM', KEYS[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return head
"""
"""Returns the new head; -1: another worker owns the turn; -2: the run is gone (Redis lost
its data), and the owner may write it again from the start."""

MARK_ACTIVE = """
-- KEYS: run, active. ARGV: stream id, summary. Lists a running turn in the active set, unless
-- its terminal event is already written (a turn that ended before its worker listed it).
if redis.call('HGET', KEYS[1], 'ended') then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
"""Returns 1 (listed) or 0 (the turn has ended: not listed)."""

CLAIM = """
-- KEYS: run. ARGV: token. Makes the caller the only writer; returns the head written so far.
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return tonumber(redis.call('HGET', KEYS[1], 'head') or '0')
"""

RESEED = """
-- KEYS: run, events, meta. ARGV: token, then the meta's field, value pairs. After Redis lost
-- the run: own it again, from an empty log, and put back what gateways need to serve it.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'head', 0)
if #ARGV > 1 then redis.call('HSET', KEYS[3], unpack(ARGV, 2)) end
return 1
"""

ADOPT_LOST = """
-- KEYS: run, meta. ARGV: token. A turn Redis lost whole (no run, no meta: a restart without
-- persistence) that nobody is rewriting: the caller becomes its writer, to end it.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'head', 0)
return 1
"""

RENEW = """
-- KEYS: jobs. ARGV: group, consumer, then job ids. Resets the idle time of the jobs this
-- consumer still holds (XCLAIM alone would also take jobs another worker took over).
local taken = {}
if redis.call('EXISTS', KEYS[1]) == 0 then return taken end
for i = 3, #ARGV do
  local found, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if found and pending[1] then
    if pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      taken[#taken + 1] = ARGV[i]
    end
  end
end
return taken
"""
"""Returns the ids another worker holds now (it took them over). An id no longer pending at
all (Redis lost the queue) is not taken: this worker keeps running the turn."""

ENQUEUE = """
-- KEYS: jobs, meta, the tenant's turns, tenants. ARGV: limit, share (0: the tenant has none),
-- tenant, stream id, then the job's field, value pairs, then '--', then the meta's.
-- Admission and enqueueing in one step: the turns queued or running in the whole cluster (the
-- queue's entries: a job is deleted once acknowledged) stay under limits.max_active_turns, and
-- a tenant's (its set, until its terminal event is appended) under its share.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local share = tonumber(ARGV[2])
if share > 0 and redis.call('SCARD', KEYS[3]) >= share then return -1 end
local job, meta, target = {}, {}, nil
target = job
for i = 5, #ARGV do
  if ARGV[i] == '--' then target = meta else target[#target + 1] = ARGV[i] end
end
redis.call('HSET', KEYS[2], unpack(meta))
redis.call('XADD', KEYS[1], '*', unpack(job))
if share > 0 then
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[3])
end
return 1
"""
"""Returns 1 (queued), 0 (the cluster is full) or -1 (the tenant's share is full): 503."""

FORGET_TENANT = """
-- KEYS: the tenant's turns, tenants. ARGV: tenant. Drops a tenant from the sweep's list once
-- it has nothing in flight (in one step: a turn enqueued meanwhile keeps it listed).
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

REKEY = """
-- KEYS: an Idempotency-Key's entry. ARGV: the value it must still hold, the new one, ttl (s).
-- Points the key at a fresh turn, unless a racing retry did first.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
"""Returns 1 (the key names the new turn) or 0 (it changed meanwhile: read it again)."""
