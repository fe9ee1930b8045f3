-- Whether the snapshot stamped (ax = xmax, an = in-progress count) is older than `stamp`
-- ("xmax:inProgress" text, or nil/false = no stamp recorded: nothing is older than that).
-- A later snapshot has a larger xmax, or the same xmax and fewer transactions in progress.
local function older(ax, an, stamp)
  if not stamp then return false end
  local sep = string.find(stamp, ':', 1, true)
  local bx, bn = tonumber(string.sub(stamp, 1, sep - 1)), tonumber(string.sub(stamp, sep + 1))
  return ax < bx or (ax == bx and an > bn)
end
