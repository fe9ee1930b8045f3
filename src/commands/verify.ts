import { queries, type Sql } from '../db.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import { sleep } from '../sleep.js';
import { snapshotStamp, stampOlder, type UnreadStore } from '../store/store.js';
import { matchesTruth } from '../truth.js';

export interface Drift {
  userId: string;
  redis: { total: number; rooms: Record<string, number> };
  database: { total: number; rooms: Record<string, number> };
}

export interface VerifyReport {
  checked: number;
  drifted: Drift[];
  /** Users repaired (forgotten, reloaded by the bridge and checked again). */
  repaired: number;
  /** Rooms not compared because the bridge had already applied a newer change to them. */
  newer: number;
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
  /** With `repair`: waits until a repaired user is cached again (the running bridge reloads it). */
  reload?: (userId: string) => Promise<unknown>;
}

export class BridgeBehindError extends UnreadSyncError {
  constructor(ms: number) {
    super(
      ErrorCode.BRIDGE_BEHIND,
      `the bridge did not reach the verification snapshot within ${ms} ms (is \`unread-sync bridge\` running?)`,
    );
  }
}

/**
 * Compares cached users with the truth computed from chat_rooms, exactly, while writes go on.
 *
 * Each page's truth is read in one snapshot S, and Redis is read once the bridge has applied S.
 * A user that differs is compared room by room with versions: per room, the newest log id visible
 * in S is the version S's value corresponds to, and ids of one room are in commit order. A cached
 * room whose version is at most that reflects no change after S and must equal S's value; one with
 * a newer version was changed after S and is not comparable (counted in `newer`, never drift).
 * The cached total and room count must always equal the sum of the cached rooms.
 */
export async function verify(options: VerifyOptions): Promise<VerifyReport> {
  const { sql, store, bridgeName } = options;
  const waitMs = options.waitMs ?? 10_000;
  const report: VerifyReport = { checked: 0, drifted: [], repaired: 0, newer: 0 };

  const compare = (users: string[]) =>
    sql.begin('isolation level repeatable read read only', async (tx) => {
      const snapshot = await queries.currentSnapshot(tx);
      const truth = await queries.unreadRooms(tx, users);
      const deadline = Date.now() + waitMs;
      while (!(await queries.bridgeHasReached(sql, bridgeName, snapshot))) {
        if (Date.now() > deadline) throw new BridgeBehindError(waitMs);
        await sleep(20);
      }
      const stamp = snapshotStamp(snapshot);
      const cached = await Promise.all(users.map((u) => store.readVersioned(u)));
      const later: string[] = [];
      const suspects = new Set(
        users.filter((u, i) => {
          const c = cached[i];
          if (!c || matchesTruth(c.counts, truth.get(u) ?? [])) return false;
          // Loaded from a newer snapshot than S: its room versions do not tell what S had; compare
          // again in a newer snapshot.
          if (c.loadedAt && stampOlder(stamp, c.loadedAt)) {
            later.push(u);
            return false;
          }
          return true;
        }),
      );
      const versions = suspects.size > 0 ? await queries.roomVersions(tx, [...suspects]) : new Map<string, Map<string, string>>();
      const bad: Drift[] = [];
      users.forEach((userId, i) => {
        const c = cached[i];
        if (!c || !suspects.has(userId)) return; // not cached = unknown, nothing to compare
        const t = truth.get(userId) ?? [];
        const tRooms = new Map(t.map((r) => [r.roomId, r.unread]));
        const tVersions = versions.get(userId) ?? new Map<string, string>();
        const sum = Object.values(c.counts.rooms).reduce((a, b) => a + b, 0);
        let wrong = c.counts.total !== sum || c.counts.unreadRooms !== Object.keys(c.counts.rooms).length;
        for (const room of new Set([...tRooms.keys(), ...c.versions.keys()])) {
          const mine = c.versions.get(room) ?? { unread: 0, version: 0n };
          const atS = BigInt(tVersions.get(room) ?? '0');
          if (mine.version > atS) {
            report.newer++;
            continue;
          }
          if (mine.unread !== (tRooms.get(room) ?? 0)) wrong = true;
        }
        if (wrong) {
          bad.push({
            userId,
            redis: { total: c.counts.total, rooms: c.counts.rooms },
            database: { total: t.reduce((a, r) => a + r.unread, 0), rooms: Object.fromEntries(tRooms) },
          });
        }
      });
      return { bad, later };
    });

  const check = async (users: string[]) => {
    report.checked += users.length;
    let round = await compare(users);
    report.drifted.push(...round.bad);
    for (let i = 0; i < 5 && round.later.length > 0; i++) {
      round = await compare(round.later);
      report.drifted.push(...round.bad);
    }
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
    if (options.reload) {
      // Confirm: every repaired user is reloaded and now compares equal.
      await Promise.all(ids.map((id) => options.reload?.(id)));
      // As in check(): a user loaded again from a snapshot newer than the comparison's (the
      // bridge may reload it twice: once for the queue, once for the wait) is compared again
      // in a newer snapshot, not counted as unrepaired.
      let again = await compare(ids);
      const bad = [...again.bad];
      for (let i = 0; i < 5 && again.later.length > 0; i++) {
        again = await compare(again.later);
        bad.push(...again.bad);
      }
      const still = new Set([...bad.map((d) => d.userId), ...again.later]);
      report.repaired = ids.filter((id) => !still.has(id)).length;
    } else {
      report.repaired = ids.length;
    }
  }
  return report;
}
