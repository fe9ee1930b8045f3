--[[
  Replace one user's cached state with a snapshot read from the database.

  The snapshot's stamp (xmax, number of in-progress xids) orders snapshots taken one after the
  other: a later one has a larger xmax, or the same xmax and fewer in-progress transactions. The
  user's tombstone hash keeps field `h`, the stamp of the newest snapshot any hydration or applied
  change of this user came from (set even while the user is not cached). A hydration older than
  `h` would overwrite newer state (a bridge paused past a takeover, a lagging bridge's repair):
  it is refused. So is one older than the prefix-wide floor a reset leaves (KEYS[3], single Redis
  only; on a cluster the bridge checks the floor itself).

  A room keeps the highest version known for it (its live entry or its tombstone): the snapshot is
  at least as new as the state that wrote that version, so it contains that change, and a late
  copy of an older change must still be refused after the hydration.
  seq restarts from the server clock in microseconds (and never goes backwards for a live key),
  so a socket that saw seq from before an eviction still accepts the fresh total.

  KEYS[1]  user hash
  KEYS[2]  tombstones (+ field h)
  KEYS[3]  optional: the prefix's meta hash (field floor)
  ARGV[1]  shard channel to SPUBLISH "total unreadRooms seq" on
  ARGV[2]  stamp xmax ('' = unstamped: no check)
  ARGV[3]  stamp in-progress count
  ARGV[4]  ttl (ms) of the tombstone hash
  ARGV[5..] pairs: room, unread (unread > 0)
  Returns  {total, unreadRooms, seq}, or {-1, 0, 0} when refused as older
]]
--- @include "older"

local stamped = ARGV[2] ~= ''
local sx, sn = tonumber(ARGV[2]), tonumber(ARGV[3])
if stamped then
  if older(sx, sn, redis.call('HGET', KEYS[2], 'h')) then return {-1, 0, 0} end
  if KEYS[3] and older(sx, sn, redis.call('HGET', KEYS[3], 'floor')) then return {-1, 0, 0} end
end

local previous = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local now = redis.call('TIME')
local seq = math.max(previous + 1, tonumber(now[1]) * 1000000 + tonumber(now[2]))

local old = redis.call('HGETALL', KEYS[1])
local kept = {}
for i = 1, #old, 2 do
  if string.len(old[i]) > 1 then
    local v = old[i + 1]
    kept[old[i]] = tonumber(string.sub(v, string.find(v, ':', 1, true) + 1))
  end
end

redis.call('DEL', KEYS[1])
local total, rooms = 0, 0
for i = 5, #ARGV, 2 do
  local room, unread = ARGV[i], tonumber(ARGV[i + 1])
  local version = math.max(tonumber(redis.call('HGET', KEYS[2], room) or '0'), kept[room] or 0)
  redis.call('HDEL', KEYS[2], room)
  redis.call('HSET', KEYS[1], room, ARGV[i + 1] .. ':' .. string.format('%d', version))
  total = total + unread
  rooms = rooms + 1
end
-- A room that had unread and is absent now went to 0 within the snapshot: keep its version as a
-- tombstone so an older copy of a change cannot revive it.
local tombstoned = false
for room, version in pairs(kept) do
  if redis.call('HEXISTS', KEYS[1], room) == 0 and version > 0 then
    local tomb = tonumber(redis.call('HGET', KEYS[2], room) or '0')
    if version > tomb then redis.call('HSET', KEYS[2], room, string.format('%d', version)) end
    tombstoned = true
  end
end
if stamped then
  redis.call('HSET', KEYS[2], 'h', ARGV[2] .. ':' .. ARGV[3])
  tombstoned = true
end
if tombstoned and redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
local seqText = string.format('%d', seq)
redis.call('HSET', KEYS[1], 't', total, 'n', rooms, 's', seqText)
-- A user with nothing unread (or an id nobody uses) expires after an hour: reads of random ids
-- cannot pile up keys forever. applyChanges PERSISTs the hash once a real change arrives.
if rooms == 0 then redis.call('PEXPIRE', KEYS[1], 3600000) end
-- Field y: the snapshot this state was loaded from (verify compares against older snapshots only).
if stamped then redis.call('HSET', KEYS[1], 'y', ARGV[2] .. ':' .. ARGV[3]) end
redis.call('SPUBLISH', ARGV[1], string.format('%d %d ', total, rooms) .. seqText)
return {total, rooms, seq}
