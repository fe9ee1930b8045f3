import { queries, type Sql } from '../db.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import { sleep } from '../sleep.js';
import type { UnreadReader } from '../read/reader.js';
import type { UnreadStore } from '../store/store.js';

export interface RebuildReport {
  forgottenKeys: number;
  users: number;
  seconds: number;
}

/** Raised before anything is changed when no bridge applies the log (rebuild needs one to hydrate). */
export class NoLiveBridgeError extends UnreadSyncError {
  constructor(bridgeName: string, waitMs: number) {
    super(
      ErrorCode.NO_LIVE_BRIDGE,
      `no live bridge "${bridgeName}": it did not apply the log within ${waitMs} ms. Start \`unread-sync bridge\`` +
        ' (or `unread-sync start`) first; nothing was changed.',
    );
  }
}

/**
 * Resolves once a bridge has applied everything committed before this call (so it is running and
 * can hydrate); throws NoLiveBridgeError after `waitMs`.
 */
export async function assertLiveBridge(sql: Sql, bridgeName: string, waitMs: number): Promise<void> {
  const snapshot = await queries.currentSnapshot(sql);
  const deadline = Date.now() + waitMs;
  while (!(await queries.bridgeHasReached(sql, bridgeName, snapshot))) {
    if (Date.now() > deadline) throw new NoLiveBridgeError(bridgeName, waitMs);
    await sleep(50);
  }
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
  /** Checked first: without a live bridge nothing is forgotten. */
  bridgeName?: string;
  /** How long the live-bridge check waits (default 5 s). */
  bridgeWaitMs?: number;
  /** Called after each page with the users hydrated so far. */
  onProgress?: (users: number) => void;
}): Promise<RebuildReport> {
  const started = Date.now();
  await assertLiveBridge(options.sql, options.bridgeName ?? 'default', options.bridgeWaitMs ?? 5_000);
  const forgottenKeys = await options.store.forgetAll();
  const pages = async function* (sql: Sql, pageSize: number) {
    for await (const rows of queries.usersWithUnread(sql).cursor(pageSize)) yield rows.map((r) => r.user_id);
  };
  // A window of users in flight: the bridge hydrates a big batch per cycle while the next pages
  // are already queued.
  const users = await options.reader.ensureCachedAll(pages(options.sql, options.pageSize), {
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  return { forgottenKeys, users, seconds: (Date.now() - started) / 1000 };
}
