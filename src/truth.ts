// What a correct badge is: the domain rule the bridge's sampled check and `verify` both apply.
import type { UnreadCounts } from './store/store.js';

/** A room with unread > 0 as the database computes it (see queries.unreadRooms). */
export interface TruthRoom {
  roomId: string;
  unread: number;
}

/** Whether a cached badge equals the database's rooms with unread (total, room count and every room). */
export function matchesTruth(cached: UnreadCounts, truth: readonly TruthRoom[]): boolean {
  return (
    cached.total === truth.reduce((a, r) => a + r.unread, 0) &&
    cached.unreadRooms === truth.length &&
    Object.keys(cached.rooms).length === truth.length &&
    truth.every((r) => cached.rooms[r.roomId] === r.unread)
  );
}
