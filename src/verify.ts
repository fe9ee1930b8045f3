import { queries, type HydratedRoom, type Sql } from './db.js';
import { sleep } from './sleep.js';
import type { UnreadCounts, UnreadStore } from './store/store.js';

export interface Drift {
  userId: string;
  redis: { total: number; rooms: Record<string, number> };
  database: { total: number; rooms: Record<string, number> };
}

export interface VerifyReport {
  checked: number;
  drifted: Drift[];
  repaired: number;
}

export interface VerifyOptions {
  sql: Sql;
  store: UnreadStore;
  bridgeName: string;
  repair?: boolean;
  /** How long to wait for the bridge to reach each database snapshot. */
  waitMs?: number;
  pageSize?: number;
  /** Only these users (default: every user cached in Redis). */
  userIds?: string[];
  /** Called after each page with the users checked so far (the CLI shows it on a terminal). */
  onProgress?: (checked: number) => void;
}

export class BridgeBehindError extends Error {
  constructor(ms: number) {
    super(`the bridge did not reach the verification snapshot within ${ms} ms (is \`unread-sync bridge\` running?)`);
    this.name = 'BridgeBehindError';
  }
}


/** Whether a cached badge equals the database's rooms with unread (total, room count and every room). */
export function matchesTruth(cached: UnreadCounts, truth: HydratedRoom[]): boolean {
  return (
    cached.total === truth.reduce((a, r) => a + r.unread, 0) &&
    cached.unreadRooms === truth.length &&
    Object.keys(cached.rooms).length === truth.length &&
    truth.every((r) => cached.rooms[r.roomId] === r.unread)
  );
}

/**
 * Compares cached users with the truth computed from chat_rooms. Each page is read from one
 * database snapshot, then Redis is read once the bridge has applied that snapshot; users that
 * differ are checked again (a change may have landed in between) before being reported.
 */
export async function verify(options: VerifyOptions): Promise<VerifyReport> {
  const { sql, store, bridgeName } = options;
  const waitMs = options.waitMs ?? 10_000;
  const report: VerifyReport = { checked: 0, drifted: [], repaired: 0 };

  const compare = async (users: string[]) => {
    const { snapshot, truth } = await sql.begin('isolation level repeatable read read only', async (tx) => {
      const snap = await queries.currentSnapshot(tx);
      return { snapshot: snap, truth: await queries.unreadRooms(tx, users) };
    });
    const deadline = Date.now() + waitMs;
    while (!(await queries.bridgeHasReached(sql, bridgeName, snapshot))) {
      if (Date.now() > deadline) throw new BridgeBehindError(waitMs);
      await sleep(20);
    }
    const cached = await Promise.all(users.map((u) => store.read(u)));
    const bad: Drift[] = [];
    users.forEach((userId, i) => {
      const c = cached[i] ?? null;
      const t = truth.get(userId) ?? [];
      if (c && !matchesTruth(c, t)) { // not cached = unknown, nothing to compare
        bad.push({
          userId,
          redis: { total: c?.total ?? 0, rooms: c?.rooms ?? {} },
          database: { total: t.reduce((a, r) => a + r.unread, 0), rooms: Object.fromEntries(t.map((r) => [r.roomId, r.unread])) },
        });
      }
    });
    return bad;
  };

  const check = async (users: string[]) => {
    report.checked += users.length;
    let bad = await compare(users);
    for (let attempt = 0; attempt < 2 && bad.length > 0; attempt++) bad = await compare(bad.map((d) => d.userId));
    report.drifted.push(...bad);
    options.onProgress?.(report.checked);
  };

  if (options.userIds) {
    await check(options.userIds);
  } else {
    for await (const page of store.cachedUsers(options.pageSize ?? 500)) await check(page);
  }

  if (options.repair && report.drifted.length > 0) {
    const ids = report.drifted.map((d) => d.userId);
    await store.forget(ids);
    await store.requestHydration(ids);
    report.repaired = ids.length;
  }
  return report;
}

