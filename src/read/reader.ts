import { ErrorCode, UnreadSyncError } from '../errors.js';
import { InvalidIdError, parseUserId } from '../ids.js';
import { sleep } from '../sleep.js';
import type { BadgeTotals, UnreadCounts, UnreadStore } from '../store/store.js';

export class HydrationTimeoutError extends UnreadSyncError {
  constructor(userId: string, ms: number) {
    super(ErrorCode.HYDRATION_TIMEOUT, `no bridge hydrated user ${userId} within ${ms} ms (is \`unread-sync bridge\` running?)`);
  }
}

/**
 * Where reads go while Redis fails (DbFallback implements it). An interface, so the reader (and the
 * socket layer above it) never loads the database module: the launcher injects the fallback.
 */
export interface CountsFallback {
  /** `userId` is already validated. */
  counts(userId: string): Promise<UnreadCounts>;
}

const totalsOf = ({ total, unreadRooms, seq }: BadgeTotals): BadgeTotals => ({ total, unreadRooms, seq });

/**
 * Reads badges from Redis only. A missing user means "unknown": the reader asks the bridge to
 * hydrate it (through Redis) and waits, once per user however many callers ask at the same time.
 */
export class UnreadReader {
  private readonly inflight = new Map<string, Promise<UnreadCounts>>();
  /** Reads answered from Redis / that needed a hydration / answered by the database fallback. */
  readonly stats = { hits: 0, misses: 0, fallbacks: 0 };
  private readonly timeoutMs: number;
  private readonly fallback: CountsFallback | null;

  constructor(
    private readonly store: UnreadStore,
    options: { hydrateTimeoutMs?: number; fallback?: CountsFallback } = {},
  ) {
    this.timeoutMs = options.hydrateTimeoutMs ?? 3_000;
    this.fallback = options.fallback ?? null;
  }

  /**
   * Per-room counts, total and number of rooms with unread. When Redis fails and a database
   * fallback is configured, the answer comes from the database (marked `fromDatabase`).
   */
  async getCounts(userId: string): Promise<UnreadCounts> {
    const id = parseUserId(userId);
    try {
      const cached = await this.hit(this.store.read(id));
      if (cached) return cached;
      this.stats.misses++;
      return await this.hydrate(id);
    } catch (err) {
      if (!this.fallback || err instanceof InvalidIdError || err instanceof HydrationTimeoutError) throw err;
      return this.fromFallback(this.fallback, id);
    }
  }

  /** Total unread messages across the user's active rooms. */
  async getTotal(userId: string): Promise<number> {
    return (await this.getTotals(userId)).total;
  }

  /** Total, rooms with unread and seq, without the per-room map. */
  async getTotals(userId: string): Promise<BadgeTotals> {
    const id = parseUserId(userId);
    try {
      const cached = await this.hit(this.store.readTotals(id));
      if (cached) return cached;
    } catch (err) {
      if (!this.fallback) throw err;
      // Redis just failed: go to the database at once instead of a second doomed Redis read.
      return totalsOf(await this.fromFallback(this.fallback, id));
    }
    return totalsOf(await this.getCounts(id));
  }

  /** A Redis read, counted as a hit when it found the user. */
  private async hit<T>(read: Promise<T | null>): Promise<T | null> {
    const value = await read;
    if (value) this.stats.hits++;
    return value;
  }

  private fromFallback(fallback: CountsFallback, id: string): Promise<UnreadCounts> {
    this.stats.fallbacks++;
    return fallback.counts(id);
  }

  /**
   * Makes sure every given user is cached (asks the bridge for the missing ones, in one request,
   * and waits for all of them). Ids must be validated UUIDs.
   */
  async ensureCached(userIds: string[]): Promise<void> {
    const missing = await this.missing(userIds);
    if (missing.length > 0) await this.ensureCachedAll([missing]);
  }

  /**
   * Makes sure every user of every page is cached, keeping up to `window` users asked for and not
   * yet seen cached: a rebuild streams its pages into the bridge's queue instead of waiting for
   * each page (which left the bridge idle between pages). Progress is seen by EXISTS on the oldest
   * outstanding users (the queue is first in, first out). Returns the number of users.
   */
  async ensureCachedAll(
    pages: AsyncIterable<string[]> | Iterable<string[]>,
    options: { window?: number; onProgress?: (users: number) => void } = {},
  ): Promise<number> {
    const window = options.window ?? 32_768;
    let outstanding: string[] = [];
    let done = 0;
    let progressAt = Date.now();
    let askedAt = Date.now();
    let delay = 1;
    const check = async () => {
      const head = outstanding.slice(0, 1_024);
      const exists = await this.store.cached(head);
      const still = head.filter((_, i) => !exists[i]);
      outstanding = head.length === outstanding.length ? still : still.concat(outstanding.slice(head.length));
      if (still.length < head.length) {
        done += head.length - still.length;
        progressAt = Date.now();
        delay = 1;
        options.onProgress?.(done);
        return;
      }
      if (Date.now() - progressAt > this.timeoutMs) {
        throw new HydrationTimeoutError(`${outstanding[0]} (and ${outstanding.length - 1} more)`, this.timeoutMs);
      }
      // Re-ask only when nothing moved for long: a request is lost only if Redis restarts, and a
      // re-ask of users still queued loads them twice (a cycle of 16,000 users can take seconds).
      if (Date.now() - progressAt >= 30_000 && Date.now() - askedAt >= 30_000) {
        await this.store.requestHydration(outstanding);
        askedAt = Date.now();
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 20);
    };
    for await (const page of pages) {
      await this.store.requestHydration(page);
      askedAt = Date.now();
      for (const u of page) outstanding.push(u);
      while (outstanding.length > window) await check();
    }
    while (outstanding.length > 0) await check();
    return done;
  }

  private async missing(userIds: string[]): Promise<string[]> {
    const exists = await this.store.cached(userIds);
    return userIds.filter((_, i) => !exists[i]);
  }

  private hydrate(userId: string): Promise<UnreadCounts> {
    let pending = this.inflight.get(userId);
    if (!pending) {
      pending = this.waitForHydration(userId).finally(() => this.inflight.delete(userId));
      this.inflight.set(userId, pending);
    }
    return pending;
  }

  private async waitForHydration(userId: string): Promise<UnreadCounts> {
    const deadline = Date.now() + this.timeoutMs;
    let delay = 1;
    let askedAt = 0;
    while (Date.now() < deadline) {
      // Re-ask now and then: a request can be lost if Redis restarts.
      if (Date.now() - askedAt >= 1_000) {
        await this.store.requestHydration([userId]);
        askedAt = Date.now();
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 50);
      const counts = await this.store.read(userId);
      if (counts) return counts;
    }
    throw new HydrationTimeoutError(userId, this.timeoutMs);
  }
}
