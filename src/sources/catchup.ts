import { supabaseQueries, type HydratedRoom, type Sql } from '../db.js';
import type { Logger } from '../log.js';
import type { CycleHandler } from './source.js';

/** Live event ids remembered at most between two catch-ups (past that the miss check skips a round). */
export const LIVE_SEEN_MAX = 200_000;

export const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface CatchupRead {
  /** The snapshot the catch-up read up to: the next position. */
  upto: string;
  read: number;
  pages: number;
  /** Ids of the rows read (up to LIVE_SEEN_MAX), when asked for: the live-miss check's input. */
  readIds: string[];
}

/**
 * One catch-up: the log rows committed between `previous` and a new snapshot, page by page in
 * (xid, id) order (pooler-safe single statements pinned to the first page's snapshot), plus the
 * rooms of `hydrate` in that snapshot, handed to `handler` as one cycle. Saving the position is
 * left to the caller (it is fenced by the lease).
 */
export async function readCatchup(
  sql: Sql,
  args: {
    previous: string;
    hydrate: string[];
    bridgeName: string;
    batchSize: number;
    /** No checkpoint said what Redis holds: report a gap. */
    firstStart: boolean;
    collectIds: boolean;
    log: Logger;
  },
  handler: CycleHandler,
): Promise<CatchupRead> {
  const { previous, hydrate } = args;
  let upto: string | null = null;
  let after: { xid: string; id: string } | null = null;
  let read = 0;
  let pages = 0;
  const readIds: string[] = [];
  for (;;) {
    const rows = await supabaseQueries.readChanges(sql, {
      previous,
      upto,
      after,
      hydrate: upto === null ? hydrate : [],
      maxRows: args.batchSize,
      bridge: args.bridgeName,
    });
    pages++;
    const head = rows.find((r) => r.part === 'head');
    if (!head?.snapshot) throw new Error('read_changes returned no head row');
    if (upto === null) {
      upto = head.snapshot;
      const gap = head.gap === true || args.firstStart;
      if (head.gap) args.log.warn({ previous }, 'change log was pruned past this bridge: resetting cache');
      const hydrated = new Map<string, HydratedRoom[]>(hydrate.map((u) => [u, []]));
      for (const r of rows) {
        if (r.part === 'room' && r.user_id && r.room_id && r.unread !== null) {
          hydrated.get(r.user_id)?.push({ roomId: r.room_id, unread: r.unread });
        }
      }
      await handler.begin({ gap, hydrated, snapshot: upto });
    }
    const changes: unknown[] = [];
    for (const r of rows) {
      if (r.part !== 'change') continue;
      changes.push(
        r.kind === 'reset'
          ? { id: r.id, xid: r.xid, kind: r.kind, created_at: r.created_at }
          : {
              id: r.id,
              xid: r.xid,
              kind: r.kind,
              user_id: r.user_id,
              room_id: r.room_id,
              unread: r.unread,
              negative: r.negative,
              created_at: r.created_at,
            },
      );
      if (r.xid && r.id) after = { xid: r.xid, id: r.id };
    }
    read += changes.length;
    if (args.collectIds && readIds.length < LIVE_SEEN_MAX) {
      for (const c of changes) readIds.push((c as { id: string }).id);
    }
    if (changes.length > 0) await handler.chunk(changes);
    if (!head.more) break;
  }
  await handler.end();
  return { upto, read, pages, readIds };
}

/**
 * What the live path lost: the rows one catch-up read are compared, at the next catch-up, with the
 * ids that arrived live meanwhile (a live copy in flight during the first catch-up has had a whole
 * interval to land).
 */
export class LiveMisses {
  private seen = new Set<string>();
  private overflow = false;
  private pending: string[] = [];

  /** An event arrived live. */
  note(event: unknown): void {
    if (!isPlainObject(event) || typeof event.id !== 'string') return;
    if (this.seen.size >= LIVE_SEEN_MAX) {
      this.seen.clear();
      this.overflow = true;
    }
    this.seen.add(event.id);
  }

  /**
   * A catch-up read `readIds`: checks the previous catch-up's rows (null when the live record
   * overflowed meanwhile, so nothing can be told) and keeps these for the next.
   */
  settle(readIds: string[]): { checked: number; missed: number } | null {
    let result: { checked: number; missed: number } | null = null;
    if (!this.overflow) {
      let missed = 0;
      for (const id of this.pending) {
        if (this.seen.has(id)) this.seen.delete(id);
        else missed++;
      }
      result = { checked: this.pending.length, missed };
    } else {
      this.seen.clear();
    }
    this.overflow = false;
    this.pending = readIds;
    return result;
  }
}
