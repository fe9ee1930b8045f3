import { queries, type Sql } from '../db.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import type { UnreadCounts } from '../store/store.js';
import type { CountsFallback } from './reader.js';

export class FallbackUnavailableError extends UnreadSyncError {
  constructor(reason: string) {
    super(ErrorCode.FALLBACK_UNAVAILABLE, `database fallback unavailable: ${reason}`);
  }
}

export interface DbFallbackOptions {
  /** Queries in flight at most; callers beyond it are refused at once instead of queueing. */
  maxConcurrent?: number;
  /** Consecutive failures that open the circuit. */
  failureThreshold?: number;
  /** How long the circuit stays open before one trial query is let through. */
  openMs?: number;
}

/**
 * Badge reads from the database while Redis is down: one parameterized query per user, behind a
 * concurrency cap and a circuit breaker, so a Redis outage cannot turn into a database stampede.
 * Off by default: the socket layer is Redis-only by design (UNREAD_DB_FALLBACK turns it on).
 */
export class DbFallback implements CountsFallback {
  private inFlight = 0;
  private failures = 0;
  private openUntil = 0;
  private readonly maxConcurrent: number;
  private readonly failureThreshold: number;
  private readonly openMs: number;

  constructor(
    private readonly sql: Sql,
    options: DbFallbackOptions = {},
  ) {
    this.maxConcurrent = options.maxConcurrent ?? 4;
    this.failureThreshold = options.failureThreshold ?? 5;
    this.openMs = options.openMs ?? 5_000;
  }

  get state(): 'closed' | 'open' | 'half-open' {
    if (this.failures < this.failureThreshold) return 'closed';
    return Date.now() < this.openUntil ? 'open' : 'half-open';
  }

  /** `userId` must already be validated (see parseUserId). */
  async counts(userId: string): Promise<UnreadCounts> {
    const state = this.state;
    if (state === 'open') throw new FallbackUnavailableError('circuit open after repeated database errors');
    if (this.inFlight >= (state === 'half-open' ? 1 : this.maxConcurrent)) {
      throw new FallbackUnavailableError('too many fallback reads in flight');
    }
    this.inFlight++;
    try {
      const rooms = (await queries.unreadRooms(this.sql, [userId])).get(userId) ?? [];
      this.failures = 0;
      return {
        userId,
        total: rooms.reduce((a, r) => a + r.unread, 0),
        unreadRooms: rooms.length,
        rooms: Object.fromEntries(rooms.map((r) => [r.roomId, r.unread])),
        seq: 0,
        fromDatabase: true,
      };
    } catch (err) {
      this.failures++;
      if (this.failures >= this.failureThreshold) this.openUntil = Date.now() + this.openMs;
      throw new FallbackUnavailableError((err as Error).message);
    } finally {
      this.inFlight--;
    }
  }
}
