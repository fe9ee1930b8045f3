import type { UnreadState } from './types.js';

/**
 * Everything the client learns, as events for one pure reducer. `full` comes from a `full: true`
 * `unread-rooms-updated` or a `get-unread-counts` reply; `delta` from a `full: false` one; `totals`
 * from `total-unread-count-updated` (no rooms).
 */
export type ClientEvent =
  | { type: 'full'; seq: number; total: number; unreadRooms: number; rooms: Readonly<Record<string, number>> }
  | { type: 'delta'; seq: number; baseSeq: number; total: number; unreadRooms: number; rooms: Readonly<Record<string, number>> }
  | { type: 'totals'; seq: number; total: number; unreadRooms: number }
  | { type: 'disconnected' };

export interface ClientModel {
  /** What is shown. A new object only when something visible changed. */
  readonly state: UnreadState;
  /** Seq at which `state.rooms` is exact; may trail `state.seq` when a total arrived before its rooms. */
  readonly roomsSeq: number;
  /** Highest seq of a delta refused because it did not start at or before `roomsSeq`. */
  readonly gapSeq: number;
}

const EMPTY_ROOMS: Readonly<Record<string, number>> = Object.freeze({});

export const initialModel = (): ClientModel => ({
  state: Object.freeze({ total: 0, unreadRooms: 0, rooms: EMPTY_ROOMS, seq: 0, ready: false }),
  roomsSeq: 0,
  gapSeq: 0,
});

/** The rooms map needs a full state: a delta skipped over something, or totals ran ahead of rooms. */
export const hasGap = (m: ClientModel): boolean => m.gapSeq > m.roomsSeq;
export const roomsBehind = (m: ClientModel): boolean => m.state.seq > m.roomsSeq;
/** The rooms map is exact at `state.seq`: nothing to ask for. */
export const roomsExact = (m: ClientModel): boolean => !hasGap(m) && !roomsBehind(m);

function sameRooms(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => a[k] === b[k]);
}

function withState(m: ClientModel, next: UnreadState, roomsSeq: number, gapSeq: number): ClientModel {
  const s = m.state;
  const same =
    s.total === next.total && s.unreadRooms === next.unreadRooms && s.seq === next.seq && s.ready === next.ready && s.rooms === next.rooms;
  if (same && roomsSeq === m.roomsSeq && gapSeq === m.gapSeq) return m;
  return { state: same ? s : Object.freeze(next), roomsSeq, gapSeq };
}

function fullRooms(rooms: Readonly<Record<string, number>>): Readonly<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [id, n] of Object.entries(rooms)) if (n > 0) out[id] = n;
  return Object.freeze(out);
}

/**
 * Applies one event. Ordering rules (the contract with the server): seqs only grow; a total with
 * a seq not above the shown one is never shown; a full state replaces the rooms when it is at
 * least as new as them; a delta applies only when it starts at or before the rooms' seq (so
 * duplicates and replays are no-ops) and is otherwise recorded as a gap for a resync. Applying a
 * delta whose base is older than the rooms is exact because the server lists every room whose
 * version moved between base and seq, including one that changed and came back to its count.
 */
export function reduce(m: ClientModel, ev: ClientEvent): ClientModel {
  const s = m.state;
  switch (ev.type) {
    case 'disconnected':
      return withState(m, { ...s, ready: false }, m.roomsSeq, m.gapSeq);
    case 'totals':
      if (ev.seq <= s.seq) return m;
      return withState(m, { ...s, total: ev.total, unreadRooms: ev.unreadRooms, seq: ev.seq }, m.roomsSeq, m.gapSeq);
    case 'full': {
      if (ev.seq < m.roomsSeq) return withState(m, { ...s, ready: true }, m.roomsSeq, m.gapSeq);
      const next = fullRooms(ev.rooms);
      const rooms = sameRooms(next, s.rooms) ? s.rooms : next;
      const newest = ev.seq >= s.seq;
      return withState(
        m,
        {
          total: newest ? ev.total : s.total,
          unreadRooms: newest ? ev.unreadRooms : s.unreadRooms,
          seq: newest ? ev.seq : s.seq,
          rooms,
          ready: true,
        },
        ev.seq,
        m.gapSeq,
      );
    }
    case 'delta': {
      if (ev.seq <= m.roomsSeq) return m;
      const newest = ev.seq > s.seq;
      if (ev.baseSeq > m.roomsSeq) {
        // Cannot apply: show its (newer) total anyway and remember the gap.
        const shown = newest ? { ...s, total: ev.total, unreadRooms: ev.unreadRooms, seq: ev.seq } : s;
        return withState(m, shown, m.roomsSeq, Math.max(m.gapSeq, ev.seq));
      }
      let rooms = s.rooms;
      const changed = Object.entries(ev.rooms).filter(([id, n]) => (s.rooms[id] ?? 0) !== n);
      if (changed.length > 0) {
        const copy: Record<string, number> = { ...s.rooms };
        for (const [id, n] of changed) {
          if (n > 0) copy[id] = n;
          else delete copy[id];
        }
        rooms = Object.freeze(copy);
      }
      return withState(
        m,
        {
          total: newest ? ev.total : s.total,
          unreadRooms: newest ? ev.unreadRooms : s.unreadRooms,
          seq: newest ? ev.seq : s.seq,
          rooms,
          ready: s.ready,
        },
        ev.seq,
        m.gapSeq,
      );
    }
  }
}
