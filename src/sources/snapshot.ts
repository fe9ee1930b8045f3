// pg_snapshot arithmetic: which committed transactions a snapshot ("xmin:xmax:xip,...") contains.
// The Supabase source drops live events its position already covers; the logical source forgets
// streamed commits a cycle has read.

/** A parsed pg_snapshot "xmin:xmax:xip,...". */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  xip: Set<bigint>;
}

export function parseSnapshot(text: string): Snapshot {
  const [, xmin, xmax, xip = ''] = /^(\d+):(\d+):([\d,]*)$/.exec(text) ?? [];
  if (xmin === undefined || xmax === undefined) throw new Error(`not a pg_snapshot: ${JSON.stringify(text)}`);
  return { xmin: BigInt(xmin), xmax: BigInt(xmax), xip: new Set(xip.split(',').filter(Boolean).map(BigInt)) };
}

/** pg_visible_in_snapshot() for a committed xid: the same rule the catch-up reads by. */
export function visibleIn(xid: bigint, s: Snapshot): boolean {
  if (xid < s.xmin) return true;
  if (xid >= s.xmax) return false;
  return !s.xip.has(xid);
}

/**
 * The full 64-bit xid of a 32-bit one (as pgoutput sends it), its epoch taken from `xmax`: a
 * transaction that just committed is within 2^31 of it.
 */
export function widenXid(xid: number, xmax: bigint): bigint {
  const full = (xmax & ~0xffffffffn) | BigInt(xid >>> 0);
  return full - xmax > 0x7fffffffn ? full - 0x100000000n : full;
}

/** Whether the committed transaction with 32-bit `xid` is visible in `snapshot` (text). */
export function xidVisibleIn(xid: number, snapshot: string): boolean {
  const s = parseSnapshot(snapshot);
  return visibleIn(widenXid(xid, s.xmax), s);
}
