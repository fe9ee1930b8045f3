--[[
  Apply unread changes for one or more users, atomically and idempotently.

  A change says "room R now has N unread for this user", with version V (the change log id,
  monotonic per (user, room)). A change whose version is not newer than what is stored for
  the room (or its tombstone, kept after the room went to 0) is a duplicate or stale: skipped.
  A missing user hash means "unknown": nothing is built from a partial view.
  Several users per call save round trips on a single Redis; on a cluster every call carries
  one user, so that it touches one slot.

  KEYS[2u-1]  user u's hash        {room -> "count:version", t -> total, n -> unread rooms, s -> seq}
  KEYS[2u]    user u's tombstones  {room -> version, h -> stamp}, expires after ARGV[1] ms
  ARGV[1]     tombstone ttl (ms)
  ARGV[2]     stamp xmax of the snapshot the changes were read in ('' = unstamped)
  ARGV[3]     stamp in-progress count
  then per user, in KEYS order:
    shard channel (SPUBLISH "total unreadRooms seq" after a change, "unknown" when not cached),
    number of changes n, then n triples: room, unread, version
  Returns  per user {applied, skipped, total, unreadRooms, seq}, flattened; applied = -1 when
           the user is unknown
]]
--- @include "older"

local stamped = ARGV[2] ~= ''
local sx, sn = tonumber(ARGV[2]), tonumber(ARGV[3])
local stampText = ARGV[2] .. ':' .. ARGV[3]
local ttl = tonumber(ARGV[1])
local out = {}
local a = 4

for u = 1, #KEYS / 2 do
  local hash, tombs = KEYS[2 * u - 1], KEYS[2 * u]
  local channel, n = ARGV[a], tonumber(ARGV[a + 1])
  local first, last = a + 2, a + 1 + 3 * n
  a = last + 1

  -- The user's state already comes from a newer snapshot (a hydration, or changes a newer cycle
  -- applied), which contains every change read in this older one: nothing here may be written.
  local stale = stamped and older(sx, sn, redis.call('HGET', tombs, 'h'))
  if stamped and not stale then
    -- Recorded even for an uncached user: a hydration read before these changes must not land.
    redis.call('HSET', tombs, 'h', stampText)
    if redis.call('PTTL', tombs) < ttl then redis.call('PEXPIRE', tombs, ttl) end
  end

  if redis.call('EXISTS', hash) == 0 then
    -- Tell socket servers holding this user that its cache is gone (evicted or wiped).
    redis.call('SPUBLISH', channel, 'unknown')
    for _, v in ipairs({-1, 0, 0, 0, 0}) do out[#out + 1] = v end
  elseif stale then
    local t = redis.call('HMGET', hash, 't', 'n', 's')
    for _, v in ipairs({0, n, tonumber(t[1]), tonumber(t[2]), tonumber(t[3])}) do out[#out + 1] = v end
  else
    local applied, skipped, dTotal, dRooms = 0, 0, 0, 0
    local tombstoned = false
    for i = first, last, 3 do
      local room, unread, version = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
      local current = redis.call('HGET', hash, room)
      local count, seen = 0, -1
      if current then
        local sep = string.find(current, ':', 1, true)
        count = tonumber(string.sub(current, 1, sep - 1))
        seen = tonumber(string.sub(current, sep + 1))
      else
        local tomb = redis.call('HGET', tombs, room)
        if tomb then seen = tonumber(tomb) end
      end

      if version <= seen then
        skipped = skipped + 1
      else
        if unread > 0 then
          redis.call('HSET', hash, room, ARGV[i + 1] .. ':' .. ARGV[i + 2])
          if not current and seen >= 0 then redis.call('HDEL', tombs, room) end
        else
          if current then redis.call('HDEL', hash, room) end
          redis.call('HSET', tombs, room, ARGV[i + 2])
          tombstoned = true
        end
        dTotal = dTotal + unread - count
        dRooms = dRooms + (unread > 0 and 1 or 0) - (count > 0 and 1 or 0)
        applied = applied + 1
      end
    end

    if tombstoned and redis.call('PTTL', tombs) < ttl then redis.call('PEXPIRE', tombs, ARGV[1]) end

    if applied == 0 then
      local t = redis.call('HMGET', hash, 't', 'n', 's')
      for _, v in ipairs({0, skipped, tonumber(t[1]), tonumber(t[2]), tonumber(t[3])}) do out[#out + 1] = v end
    else
      local total = redis.call('HINCRBY', hash, 't', dTotal)
      local rooms = redis.call('HINCRBY', hash, 'n', dRooms)
      local seq = redis.call('HINCRBY', hash, 's', 1)
      redis.call('PERSIST', hash) -- a real change: no longer an expiring empty hydration
      -- %d keeps large integers exact; Lua's default number format would switch to exponents.
      redis.call('SPUBLISH', channel, string.format('%d %d %d', total, rooms, seq))
      for _, v in ipairs({applied, skipped, total, rooms, seq}) do out[#out + 1] = v end
    end
  end
end

return out
