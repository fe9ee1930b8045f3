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
  Returns  per user {applied, skipped, total, unreadRooms, seq}, flattened; applied = UNKNOWN_USER
           when the user is unknown
  Statuses (ApplyStatus in src/store/status.ts):
    UNKNOWN_USER = -1  in place of applied: the user is not cached, nothing was written
]]
--- @include "older"

local UNKNOWN_USER = -1
-- The version of a room with no entry and no tombstone: older than every change (log ids start at 1).
local NO_VERSION = -1

local stamped = ARGV[2] ~= ''
local sx, sn = tonumber(ARGV[2]), tonumber(ARGV[3])
local stampText = ARGV[2] .. ':' .. ARGV[3]
local ttl = tonumber(ARGV[1])
local out = {}
local a = 4

-- Commands take their arguments through unpack(), whose stack is limited: long lists go in slices
-- (an even size, so field/value pairs stay together).
local SLICE = 500
local function call(key, command, args)
  for i = 1, #args, SLICE do
    redis.call(command, key, unpack(args, i, math.min(#args, i + SLICE - 1)))
  end
end
-- HMGET of `lead` fields then `names`, in slices; missing fields are false.
local function hmget(key, names, lead)
  local got = {}
  local fields = {}
  for _, f in ipairs(lead) do fields[#fields + 1] = f end
  for _, f in ipairs(names) do fields[#fields + 1] = f end
  for i = 1, #fields, SLICE do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(#fields, i + SLICE - 1)))
    for j = 1, #part do got[#got + 1] = part[j] end
  end
  return got
end

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
    for _, v in ipairs({UNKNOWN_USER, 0, 0, 0, 0}) do out[#out + 1] = v end
  elseif stale then
    local t = redis.call('HMGET', hash, 't', 'n', 's')
    for _, v in ipairs({0, n, tonumber(t[1]), tonumber(t[2]), tonumber(t[3])}) do out[#out + 1] = v end
  else
    -- Aggregated per user: the rooms' state is read with one HMGET of the hash and one of the
    -- tombstones, the changes run in order against that state here, and only each room's final
    -- state is written back (a fixed handful of commands per user, not three per change).
    local names, count, seen, live, tomb = {}, {}, {}, {}, {}
    for i = first, last, 3 do
      local room = ARGV[i]
      if count[room] == nil then
        names[#names + 1] = room
        count[room] = 0
        seen[room] = NO_VERSION
      end
    end
    local current = hmget(hash, names, {'t', 'n', 's'})
    local totals = {current[1], current[2], current[3]}
    local absent = {}
    for j = 1, #names do
      local v = current[j + 3]
      local room = names[j]
      if v then
        local sep = string.find(v, ':', 1, true)
        count[room] = tonumber(string.sub(v, 1, sep - 1))
        seen[room] = tonumber(string.sub(v, sep + 1))
        live[room] = true
      else
        absent[#absent + 1] = room
      end
    end
    if #absent > 0 then
      local tombs_ = hmget(tombs, absent, {})
      for j = 1, #absent do
        if tombs_[j] then
          seen[absent[j]] = tonumber(tombs_[j])
          tomb[absent[j]] = true
        end
      end
    end

    local applied, skipped, dTotal, dRooms = 0, 0, 0, 0
    local dirty, dirtyList = {}, {}
    for i = first, last, 3 do
      local room, unread, version = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
      if version <= seen[room] then
        skipped = skipped + 1
      else
        local was = count[room]
        dTotal = dTotal + unread - was
        dRooms = dRooms + (unread > 0 and 1 or 0) - (was > 0 and 1 or 0)
        count[room] = unread
        seen[room] = version
        if not dirty[room] then
          dirty[room] = true
          dirtyList[#dirtyList + 1] = room
        end
        applied = applied + 1
      end
    end

    if applied == 0 then
      for _, v in ipairs({0, skipped, tonumber(totals[1]), tonumber(totals[2]), tonumber(totals[3])}) do out[#out + 1] = v end
    else
      local total = (tonumber(totals[1]) or 0) + dTotal
      local rooms = (tonumber(totals[2]) or 0) + dRooms
      local seq = (tonumber(totals[3]) or 0) + 1
      -- %d keeps large integers exact; Lua's default number format would switch to exponents.
      local sets = {'t', string.format('%d', total), 'n', string.format('%d', rooms), 's', string.format('%d', seq)}
      local dels, zeroed, revived = {}, {}, {}
      for _, room in ipairs(dirtyList) do
        local version = string.format('%d', seen[room])
        if count[room] > 0 then
          sets[#sets + 1] = room
          sets[#sets + 1] = string.format('%d', count[room]) .. ':' .. version
          if tomb[room] then revived[#revived + 1] = room end
        else
          if live[room] then dels[#dels + 1] = room end
          zeroed[#zeroed + 1] = room
          zeroed[#zeroed + 1] = version
        end
      end
      call(hash, 'HSET', sets)
      if #dels > 0 then call(hash, 'HDEL', dels) end
      if #revived > 0 then call(tombs, 'HDEL', revived) end
      if #zeroed > 0 then
        call(tombs, 'HSET', zeroed)
        if redis.call('PTTL', tombs) < ttl then redis.call('PEXPIRE', tombs, ARGV[1]) end
      end
      redis.call('PERSIST', hash) -- a real change: no longer an expiring empty hydration
      redis.call('SPUBLISH', channel, string.format('%d %d %d', total, rooms, seq))
      for _, v in ipairs({applied, skipped, total, rooms, seq}) do out[#out + 1] = v end
    end
  end
end

return out
