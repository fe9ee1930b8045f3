import { queries, type Sql } from './db.js';
import type { UnreadReader } from './reader.js';
import type { UnreadStore } from './store/store.js';

export interface RebuildReport {
  forgottenKeys: number;
  users: number;
  seconds: number;
}

/**
 * Forgets every cached user, then has the running bridge hydrate every user with unread, page by
 * page (one pass over chat_rooms). Users with nothing unread load on their first read.
 * Hydration goes through the bridge so it never races changes in flight.
 */
export async function rebuildAll(options: {
  sql: Sql;
  store: UnreadStore;
  reader: UnreadReader;
  pageSize: number;
}): Promise<RebuildReport> {
  const started = Date.now();
  const forgottenKeys = await options.store.forgetAll();
  let users = 0;
  for await (const rows of queries.usersWithUnread(options.sql).cursor(options.pageSize)) {
    await options.reader.ensureCached(rows.map((r) => r.user_id));
    users += rows.length;
  }
  return { forgottenKeys, users, seconds: (Date.now() - started) / 1000 };
}
