import { sendUserTopicMessages, type Sql } from '../db.js';
import type { SetEvent } from '../events.js';
import type { Logger } from '../log.js';

/** Private Realtime topic of one user's badge (RLS lets only that user join it). */
export const userTopicOf = (userId: string): string => `unread-sync:user:${userId}`;

/** Broadcast event name on the user topic (the same name as the socket event). */
export const USER_TOPIC_EVENT = 'unread-rooms-updated';

/**
 * What the bridge broadcasts to `unread-sync:user:<uuid>` in Supabase-direct mode: the rooms that
 * changed, each with the version (change-log id) and transaction (xid8) of its change. Realtime
 * delivers at most once and in any order, so there is no total and no base: a client merges room
 * by room (see src/client/supabase.ts), dropping changes already in its snapshot and keeping the
 * highest version per room.
 */
export interface UserTopicPayload {
  userId: string;
  /** Highest version in this message. */
  seq: number;
  full: false;
  /** roomId -> unread (0 = read). */
  rooms: Record<string, number>;
  /** roomId -> change-log id (decimal text). */
  versions: Record<string, string>;
  /** roomId -> xid8 of the writing transaction (decimal text). */
  xids: Record<string, string>;
}

/** Users per statement: one realtime.send each, one round trip per batch. */
const USERS_PER_STATEMENT = 500;

/**
 * Supabase-direct publisher, called by the bridge after it applied a chunk. One message per user
 * per chunk (a burst costs one Realtime message per user, not per change). Failures are logged and
 * dropped: Realtime is at most once anyway, and clients resync from the RPC on every (re)join.
 */
export class UserTopicPublisher {
  published = 0;
  failures = 0;

  constructor(
    private readonly sql: Sql,
    private readonly log: Logger,
  ) {}

  async publish(events: SetEvent[]): Promise<void> {
    const byUser = new Map<string, UserTopicPayload>();
    for (const e of events) {
      // Without the transaction a client could not tell a change from before its snapshot.
      if (!e.xid) continue;
      let p = byUser.get(e.user_id);
      if (!p) byUser.set(e.user_id, (p = { userId: e.user_id, seq: 0, full: false, rooms: {}, versions: {}, xids: {} }));
      const seen = p.versions[e.room_id];
      if (seen !== undefined && Number(seen) >= Number(e.id)) continue;
      p.rooms[e.room_id] = e.unread;
      p.versions[e.room_id] = e.id;
      p.xids[e.room_id] = e.xid;
      p.seq = Math.max(p.seq, Number(e.id));
    }
    const messages = [...byUser.values()].map((payload) => ({ topic: userTopicOf(payload.userId), payload }));
    for (let i = 0; i < messages.length; i += USERS_PER_STATEMENT) {
      const batch = messages.slice(i, i + USERS_PER_STATEMENT);
      try {
        await sendUserTopicMessages(this.sql, batch);
        this.published += batch.length;
      } catch (err) {
        this.failures += batch.length;
        this.log.warn({ users: batch.length, err: (err as Error).message }, 'user topic broadcast failed (clients resync on rejoin)');
      }
    }
  }
}
