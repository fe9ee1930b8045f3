--[[
  Apply a batch of unread changes for ONE user, atomically and idempotently.

  A change says "room R now has N unread for this user", with version V (the change log id,
  monotonic per (user, room)). A change whose version is not newer than what is stored for
  the room (or its tombstone, kept after the room went to 0) is a duplicate or stale: skipped.

  A missing user hash means "unknown": nothing is built from a partial view.

  KEYS[1]  user hash      {room -> "count:version", t -> total, n -> unread rooms, s -> seq}
  KEYS[2]  tombstones     {room -> version}, expires after ARGV[1] ms
  ARGV[1]  tombstone ttl (ms)
  ARGV[2]  shard channel: SPUBLISH "total unreadRooms seq" after a change, "unknown" when the user is not cached
  ARGV[3..] triples: room, unread, version
  Returns  {applied, skipped, total, unreadRooms, seq}; applied = -1 when the user is unknown
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Tell socket servers holding this user that its cache is gone (evicted or wiped).
  redis.call('SPUBLISH', ARGV[2], 'unknown')
  return {-1, 0, 0, 0, 0}
end

local applied, skipped, dTotal, dRooms = 0, 0, 0, 0
local tombstoned = false

for i = 3, #ARGV, 3 do
  local room, unread, version = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local current = redis.call('HGET', KEYS[1], room)
  local count, seen = 0, -1
  if current then
    local sep = string.find(current, ':', 1, true)
    count = tonumber(string.sub(current, 1, sep - 1))
    seen = tonumber(string.sub(current, sep + 1))
  else
    local tomb = redis.call('HGET', KEYS[2], room)
    if tomb then seen = tonumber(tomb) end
  end

  if version <= seen then
    skipped = skipped + 1
  else
    if unread > 0 then
      redis.call('HSET', KEYS[1], room, ARGV[i + 1] .. ':' .. ARGV[i + 2])
      if not current and seen >= 0 then redis.call('HDEL', KEYS[2], room) end
    else
      if current then redis.call('HDEL', KEYS[1], room) end
      redis.call('HSET', KEYS[2], room, ARGV[i + 2])
      tombstoned = true
    end
    dTotal = dTotal + unread - count
    dRooms = dRooms + (unread > 0 and 1 or 0) - (count > 0 and 1 or 0)
    applied = applied + 1
  end
end

if tombstoned then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end

if applied == 0 then
  local t = redis.call('HMGET', KEYS[1], 't', 'n', 's')
  return {0, skipped, tonumber(t[1]), tonumber(t[2]), tonumber(t[3])}
end

local total = redis.call('HINCRBY', KEYS[1], 't', dTotal)
local rooms = redis.call('HINCRBY', KEYS[1], 'n', dRooms)
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
-- %d keeps large integers exact; Lua's default number format would switch to exponents.
redis.call('SPUBLISH', ARGV[2], string.format('%d %d %d', total, rooms, seq))
return {applied, skipped, total, rooms, seq}
