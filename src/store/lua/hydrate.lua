--[[
  Replace one user's cached state with a snapshot read from the database.

  Rooms get version 0 ("as of the snapshot"): every later change is newer. A room that has a
  tombstone keeps the tombstone's version instead, so a stale duplicate still cannot revive it.
  seq restarts from the server clock in microseconds (and never goes backwards for a live key),
  so a socket that saw seq from before an eviction still accepts the fresh total.

  KEYS[1]  user hash
  KEYS[2]  tombstones
  ARGV[1]  shard channel to SPUBLISH "total unreadRooms seq" on
  ARGV[2..] pairs: room, unread (unread > 0)
  Returns  {total, unreadRooms, seq}
]]
local previous = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local now = redis.call('TIME')
local seq = math.max(previous + 1, tonumber(now[1]) * 1000000 + tonumber(now[2]))

redis.call('DEL', KEYS[1])
local total, rooms = 0, 0
for i = 2, #ARGV, 2 do
  local room, unread = ARGV[i], tonumber(ARGV[i + 1])
  local version = tonumber(redis.call('HGET', KEYS[2], room) or '0')
  if version > 0 then redis.call('HDEL', KEYS[2], room) end
  redis.call('HSET', KEYS[1], room, ARGV[i + 1] .. ':' .. string.format('%d', version))
  total = total + unread
  rooms = rooms + 1
end
local seqText = string.format('%d', seq)
redis.call('HSET', KEYS[1], 't', total, 'n', rooms, 's', seqText)
-- A user with nothing unread (or an id nobody uses) expires after an hour: reads of random ids
-- cannot pile up keys forever. applyChanges PERSISTs the hash once a real change arrives.
if rooms == 0 then redis.call('PEXPIRE', KEYS[1], 3600000) end
redis.call('SPUBLISH', ARGV[1], string.format('%d %d ', total, rooms) .. seqText)
return {total, rooms, seq}
