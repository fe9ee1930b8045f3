--[[
  Replace users' cached state with a snapshot read from the database (one or more users per call:
  a rebuild hydrates tens of thousands of users a second, and a call per user cost more than the
  work in it).

  The snapshot's stamp (xmax, number of in-progress xids) orders snapshots taken one after the
  other: a later one has a larger xmax, or the same xmax and fewer in-progress transactions. A
  user's tombstone hash keeps field `h`, the stamp of the newest snapshot any hydration or applied
  change of this user came from (set even while the user is not cached). A hydration older than
  `h` would overwrite newer state (a bridge paused past a takeover, a lagging bridge's repair):
  it is refused, user by user. So is one older than the prefix-wide floor a reset leaves (the meta
  hash, single Redis only; on a cluster the bridge checks the floor itself).

  A room keeps the highest version known for it (its live entry or its tombstone): the snapshot is
  at least as new as the state that wrote that version, so it contains that change, and a late
  copy of an older change must still be refused after the hydration.
  seq restarts from the server clock in microseconds (and never goes backwards for a live key),
  so a socket that saw seq from before an eviction still accepts the fresh total.

  KEYS     [meta hash (field floor), when ARGV[4] = '1'], then per user: user hash, tombstones (+ h)
  ARGV[1]  stamp xmax ('' = unstamped: no check)
  ARGV[2]  stamp in-progress count
  ARGV[3]  ttl (ms) of the tombstone hash
  ARGV[4]  '1' when KEYS[1] is the prefix's meta hash, '0' otherwise
  then per user, in KEYS order: shard channel (SPUBLISH "total unreadRooms seq"), number of rooms
    n, then n pairs: room field, unread (> 0)
  Returns  per user {total, unreadRooms, seq}, flattened; {REFUSED, 0, 0} when refused as older
  Statuses (HydrateStatus in src/store/status.ts):
    REFUSED = -1  in place of total: the snapshot is older than the user's state or the reset floor
]]
--- @include "older"

local REFUSED = -1

local stamped = ARGV[1] ~= ''
local sx, sn = tonumber(ARGV[1]), tonumber(ARGV[2])
local stampText = ARGV[1] .. ':' .. ARGV[2]
local ttl = tonumber(ARGV[3])
local first = 1
local refusedAll = false
if ARGV[4] == '1' then
  first = 2
  refusedAll = stamped and older(sx, sn, redis.call('HGET', KEYS[1], 'floor'))
end
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
-- Commands take their arguments through unpack(), whose stack is limited: long lists go in slices.
local SLICE = 500
local out = {}
local a = 5

for k = first, #KEYS, 2 do
  local hash, tombs = KEYS[k], KEYS[k + 1]
  local channel, n = ARGV[a], tonumber(ARGV[a + 1])
  local from, to = a + 2, a + 1 + 2 * n
  a = to + 1

  if refusedAll or (stamped and older(sx, sn, redis.call('HGET', tombs, 'h'))) then
    out[#out + 1] = REFUSED
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    local old = redis.call('HGETALL', hash)
    local kept = {}
    local previous = 0
    for i = 1, #old, 2 do
      local f = old[i]
      if string.len(f) > 1 then
        local v = old[i + 1]
        kept[f] = tonumber(string.sub(v, string.find(v, ':', 1, true) + 1))
      elseif f == 's' then
        previous = tonumber(old[i + 1]) or 0
      end
    end
    if #old > 0 then redis.call('DEL', hash) end
    local seq = math.max(previous + 1, clock)

    local total, rooms = 0, 0
    local present = {}
    for s = from, to, 2 * SLICE do
      local e = math.min(to, s + 2 * SLICE - 1)
      local names = {}
      for i = s, e, 2 do names[#names + 1] = ARGV[i] end
      local tomb = redis.call('HMGET', tombs, unpack(names))
      local fields, gone = {}, {}
      for j = 1, #names do
        local room, count = names[j], ARGV[s + 2 * j - 1]
        local version = math.max(tonumber(tomb[j] or '0'), kept[room] or 0)
        if tomb[j] then gone[#gone + 1] = room end
        fields[#fields + 1] = room
        fields[#fields + 1] = count .. ':' .. string.format('%d', version)
        present[room] = true
        total = total + tonumber(count)
        rooms = rooms + 1
      end
      if #gone > 0 then redis.call('HDEL', tombs, unpack(gone)) end
      redis.call('HSET', hash, unpack(fields))
    end
    -- A room that had unread and is absent now went to 0 within the snapshot: keep its version as
    -- a tombstone so an older copy of a change cannot revive it.
    local tombstoned = false
    for room, version in pairs(kept) do
      if not present[room] and version > 0 then
        local tomb = tonumber(redis.call('HGET', tombs, room) or '0')
        if version > tomb then redis.call('HSET', tombs, room, string.format('%d', version)) end
        tombstoned = true
      end
    end
    if stamped then
      redis.call('HSET', tombs, 'h', stampText)
      tombstoned = true
    end
    if tombstoned and redis.call('PTTL', tombs) < ttl then redis.call('PEXPIRE', tombs, ttl) end
    local seqText = string.format('%d', seq)
    -- Field y: the snapshot this state was loaded from (verify compares against older snapshots only).
    if stamped then
      redis.call('HSET', hash, 't', total, 'n', rooms, 's', seqText, 'y', stampText)
    else
      redis.call('HSET', hash, 't', total, 'n', rooms, 's', seqText)
    end
    -- A user with nothing unread (or an id nobody uses) expires after an hour: reads of random ids
    -- cannot pile up keys forever. applyChanges PERSISTs the hash once a real change arrives.
    if rooms == 0 then redis.call('PEXPIRE', hash, 3600000) end
    redis.call('SPUBLISH', channel, string.format('%d %d ', total, rooms) .. seqText)
    out[#out + 1] = total
    out[#out + 1] = rooms
    out[#out + 1] = seq
  end
end

return out
