import type { RealtimeChannel, RealtimeChannelOptions } from '@supabase/realtime-js';
import type { UnreadBadgesClient, UnreadListener, UnreadState } from './types.js';

/**
 * Supabase-direct mode: the same UnreadBadgesClient without a socket server. The bridge (with
 * UNREAD_USER_TOPICS=true) broadcasts each user's room changes to the private topic
 * `unread-sync:user:<uuid>`; the initial state comes from the RPC `unread_sync_my_rooms()`.
 *
 * Ordering is exact although Realtime delivers at most once, in any order, possibly twice:
 * - the RPC answers the rooms and the statement's snapshot; a broadcast whose transaction (xid)
 *   is visible in that snapshot is already in the state and is dropped;
 * - every other broadcast is newer than the snapshot for its room (changes to one room commit in
 *   order), and among those the highest version (change-log id) wins, per room. So duplicates and
 *   reorders cannot move a room back, and the total (the sum of the rooms) never shows an older
 *   value for any room.
 * A broadcast lost by Realtime is repaired by the next RPC: on every (re)join and every
 * `resyncIntervalMs`.
 */

/** The parts of a supabase-js client this uses (a `SupabaseClient` fits). */
export interface SupabaseLike {
  channel(name: string, opts?: RealtimeChannelOptions): RealtimeChannel;
  removeChannel(channel: RealtimeChannel): Promise<unknown>;
  rpc(fn: string): PromiseLike<{ data: unknown; error: { message: string } | null }>;
}

export interface SupabaseBadgesOptions {
  supabase: SupabaseLike;
  /** The signed-in user's id (auth.uid()); the topic's RLS policy admits only that user. */
  userId: string;
  /** Name of the initial-state RPC (default `unread_sync_my_rooms`). */
  rpc?: string;
  /** Re-read the full state this often, to repair broadcasts Realtime lost (default 60 s; 0 = only on rejoin). */
  resyncIntervalMs?: number;
  onError?: (error: Error) => void;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DIGITS = /^[0-9]{1,20}$/;

interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  xip: Set<bigint>;
}

/** Parses pg_snapshot text `xmin:xmax:xip,xip`; null when malformed. */
export function parseSnapshotText(text: string): Snapshot | null {
  const m = /^([0-9]{1,20}):([0-9]{1,20}):([0-9,]*)$/.exec(text);
  if (!m) return null;
  const xip = new Set<bigint>();
  for (const x of (m[3] as string).split(',')) if (x) xip.add(BigInt(x));
  return { xmin: BigInt(m[1] as string), xmax: BigInt(m[2] as string), xip };
}

/** pg_visible_in_snapshot for a committed transaction. */
const visible = (xid: bigint, s: Snapshot) => xid < s.xmin || (xid < s.xmax && !s.xip.has(xid));

interface RoomEntry {
  unread: number;
  /** Change-log id of the change this value came from; 0 = from the RPC snapshot. */
  version: number;
  /** Transaction of that change; null = from the RPC snapshot. */
  xid: bigint | null;
}

interface Change {
  room: string;
  unread: number;
  version: number;
  xid: bigint;
}

/** Validates a broadcast payload into per-room changes; anything malformed is skipped. */
function changesOf(payload: unknown, userId: string): Change[] {
  if (!payload || typeof payload !== 'object') return [];
  const p = payload as Record<string, unknown>;
  if (p.userId !== userId) return [];
  const rooms = p.rooms as Record<string, unknown> | undefined;
  const versions = p.versions as Record<string, unknown> | undefined;
  const xids = p.xids as Record<string, unknown> | undefined;
  if (!rooms || !versions || !xids || typeof rooms !== 'object') return [];
  const out: Change[] = [];
  for (const [room, unread] of Object.entries(rooms)) {
    const v = versions[room];
    const x = xids[room];
    if (typeof unread !== 'number' || !Number.isInteger(unread) || unread < 0) continue;
    if (typeof v !== 'string' || !DIGITS.test(v) || typeof x !== 'string' || !DIGITS.test(x)) continue;
    const version = Number(v);
    if (!Number.isSafeInteger(version)) continue;
    out.push({ room, unread, version, xid: BigInt(x) });
  }
  return out;
}

export function connectUnreadBadgesSupabase(options: SupabaseBadgesOptions): UnreadBadgesClient {
  const userId = options.userId.toLowerCase();
  if (!UUID.test(userId)) throw new Error('userId must be a UUID');
  const { supabase } = options;
  const rpcName = options.rpc ?? 'unread_sync_my_rooms';
  const resyncMs = options.resyncIntervalMs ?? 60_000;
  const listeners = new Set<UnreadListener>();
  const rooms = new Map<string, RoomEntry>();
  let snapshot: Snapshot | null = null;
  let seq = 0;
  let closed = false;
  /** Broadcasts that arrived before the first state: applied once it is there. */
  let early: Change[] = [];
  let state: UnreadState = { total: 0, unreadRooms: 0, rooms: {}, seq: 0, ready: false };

  const report = (err: Error) => options.onError?.(err);

  function publish(ready: boolean): void {
    const map: Record<string, number> = {};
    let total = 0;
    for (const [room, e] of rooms) {
      if (e.unread > 0) {
        map[room] = e.unread;
        total += e.unread;
      }
    }
    const next: UnreadState = { total, unreadRooms: Object.keys(map).length, rooms: map, seq, ready };
    const same =
      next.total === state.total &&
      next.unreadRooms === state.unreadRooms &&
      next.seq === state.seq &&
      next.ready === state.ready &&
      Object.keys(map).length === Object.keys(state.rooms).length &&
      Object.entries(map).every(([r, n]) => state.rooms[r] === n);
    if (same) return;
    state = Object.freeze({ ...next, rooms: Object.freeze(map) });
    for (const l of listeners) l(state);
  }

  function apply(changes: Change[]): boolean {
    let changed = false;
    for (const c of changes) {
      if (snapshot && visible(c.xid, snapshot)) continue; // already in the RPC state
      const cur = rooms.get(c.room);
      if (cur && cur.version >= c.version && cur.xid !== null) continue; // duplicate or older
      rooms.set(c.room, { unread: c.unread, version: c.version, xid: c.xid });
      seq = Math.max(seq, c.version);
      changed = true;
    }
    return changed;
  }

  function onBroadcast(payload: unknown): void {
    if (closed) return;
    const changes = changesOf(payload, userId);
    if (!snapshot) {
      early.push(...changes);
      return;
    }
    if (apply(changes)) publish(true);
  }

  let fetching: Promise<void> | null = null;
  function resync(): Promise<void> {
    // One RPC at a time; a rejoin during one simply waits for it.
    fetching ??= (async () => {
      try {
        const { data, error } = await supabase.rpc(rpcName);
        if (closed) return;
        if (error) throw new Error(`${rpcName} failed: ${error.message}`);
        const d = data as { userId?: unknown; snapshot?: unknown; seq?: unknown; rooms?: unknown } | null;
        const snap = typeof d?.snapshot === 'string' ? parseSnapshotText(d.snapshot) : null;
        if (!d || d.userId !== userId || !snap || !d.rooms || typeof d.rooms !== 'object') {
          throw new Error(`${rpcName} returned no state for this user (signed in as someone else, or not at all?)`);
        }
        // Keep what is newer than the RPC's snapshot; everything else comes from the RPC.
        for (const [room, e] of [...rooms]) if (e.xid === null || visible(e.xid, snap)) rooms.delete(room);
        for (const [room, n] of Object.entries(d.rooms as Record<string, unknown>)) {
          if (typeof n !== 'number' || rooms.has(room)) continue;
          rooms.set(room, { unread: n, version: 0, xid: null });
        }
        snapshot = snap;
        if (typeof d.seq === 'number' && Number.isSafeInteger(d.seq)) seq = Math.max(seq, d.seq);
        const pending = early;
        early = [];
        apply(pending);
        publish(true);
      } catch (err) {
        report(err as Error);
      } finally {
        fetching = null;
      }
    })();
    return fetching;
  }

  const channel = supabase
    .channel(`unread-sync:user:${userId}`, { config: { private: true } })
    .on('broadcast', { event: 'unread-rooms-updated' }, (m: { payload?: unknown }) => onBroadcast(m.payload));
  channel.subscribe((status: string, err?: Error) => {
    if (closed) return;
    // Subscribed first, then read: nothing broadcast in between is missed (it is either in the
    // RPC's snapshot or newer than it).
    if (status === 'SUBSCRIBED') void resync();
    else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') report(err ?? new Error(`user topic ${status}`));
  });
  const timer = resyncMs > 0 ? setInterval(() => void resync(), resyncMs) : null;
  (timer as { unref?: () => void } | null)?.unref?.();

  return {
    getState: () => state,
    subscribe(listener) {
      listeners.add(listener);
      listener(state);
      return () => listeners.delete(listener);
    },
    close() {
      if (closed) return;
      closed = true;
      if (timer) clearInterval(timer);
      listeners.clear();
      void supabase.removeChannel(channel);
    },
  };
}
