import type { Sql } from '../../src/db.js';
import { sleep } from '../../src/sleep.js';
import { uuid } from './env.js';

// The data set and write load shared by the recovery, fault and cluster suites.

/** Rooms between a fixed set of users; a room's user and company are never the same user. */
export async function seedWorld(sql: Sql, users = 40, rooms = 200) {
  const ids = Array.from({ length: users }, () => uuid());
  const roomIds = Array.from({ length: rooms }, () => uuid());
  const rows = roomIds.map((id, i) => ({
    id,
    user_id: ids[i % users],
    company_id: ids[(i * 7 + 3) % users],
    user_unread_count: i % 3,
    company_unread_count: 0,
  }));
  // Chunks: one statement takes at most 65,534 parameters.
  for (let i = 0; i < rows.length; i += 5_000) await sql`insert into chat_rooms ${sql(rows.slice(i, i + 5_000))}`;
  return { users: ids, rooms: roomIds };
}

/**
 * Steady writes (messages, reads, (de)activations) from several connections until `stop()`;
 * errors (a restarting server) are retried, not counted. Resolves with the writes committed.
 */
export function steadyLoad(sql: Sql, rooms: string[], connections: number, stop: () => boolean) {
  let written = 0;
  const worker = async () => {
    while (!stop()) {
      const id = rooms[Math.floor(Math.random() * rooms.length)]!;
      const roll = Math.random();
      try {
        if (roll < 0.7) await sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
        else if (roll < 0.85) await sql`update chat_rooms set company_unread_count = company_unread_count + 1 where id = ${id}`;
        else if (roll < 0.95) await sql`update chat_rooms set user_unread_count = 0 where id = ${id}`;
        else await sql`update chat_rooms set is_active = not is_active where id = ${id}`;
        written++;
      } catch {
        await sleep(50);
      }
    }
  };
  return Promise.all(Array.from({ length: connections }, worker)).then(() => written);
}

/**
 * Opens a transaction on `sql` (a connection of its own) that sets `room` to `unread` and ages its
 * own log rows past any retention, then holds it open (older xid, not yet visible) until
 * `commit()`; resolves once it is open. For gap scenarios: a change the log may prune unread.
 */
export async function holdAgedTransaction(sql: Sql, room: string, unread: number): Promise<{ commit: () => Promise<void> }> {
  let release!: () => void;
  const released = new Promise<void>((res) => (release = res));
  let opened!: () => void;
  const isOpen = new Promise<void>((res) => (opened = res));
  const held = sql.begin(async (tx) => {
    await tx`update chat_rooms set user_unread_count = ${unread} where id = ${room}`;
    await tx`update unread_sync.changes set created_at = now() - interval '10 days' where xid = pg_current_xact_id()`;
    opened();
    await released;
  });
  await Promise.race([isOpen, held]);
  return {
    commit: async () => {
      release();
      await held;
    },
  };
}
