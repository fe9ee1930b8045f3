import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import { connect, queries } from './db.js';
import { ErrorCode, SqlState, UnreadSyncError, errorCode } from './errors.js';
import { backoffDelay } from './backoff.js';
import { sleep } from './sleep.js';

/** The migrations shipped with this package, and the table that records which ran. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../migrations', import.meta.url));
export const MIGRATIONS_TABLE = 'unread_sync_migrations';

export interface MigrateOptions {
  databaseUrl: string;
  direction: 'up' | 'down';
  /** How many to run; default: all pending (up) or all applied (down). */
  count?: number;
  log?: (message: string) => void;
  /**
   * Longest wait for any lock (e.g. CREATE TRIGGER's lock on chat_rooms behind an open app
   * transaction). App writes queue behind a waiting DDL statement, so the wait is kept short and
   * the run retried instead. Default 1000 ms.
   */
  lockTimeoutMs?: number;
  /** Retries after a lock timeout, with backoff (0.5 s doubling to 15 s, jittered). Default 8. */
  retries?: number;
  /** Aborts the backoff between retries. */
  signal?: AbortSignal;
}

/** Thrown when every attempt of a run gave up on a lock. */
export class MigrationLockError extends UnreadSyncError {
  constructor(attempts: number, lockTimeoutMs: number, applied: string[] = []) {
    super(
      ErrorCode.MIGRATION_LOCKED,
      `migration gave up after ${attempts} attempts: each waited ${lockTimeoutMs} ms for a lock (an open transaction` +
        ' holds chat_rooms); the waiting migration was rolled back' +
        (applied.length > 0 ? ` (applied before it: ${applied.join(', ')})` : ' and nothing was changed') +
        '. Retry when that transaction has ended.',
    );
  }
}

/**
 * A statement gave up on lock_timeout: pg sets the SQLSTATE on every server error. The text is
 * read only for an error without a code: node-pg-migrate rethrows a failure of its own bookkeeping
 * (ensureMigrationsTable) as a plain Error that carries the original only as text.
 */
function isLockTimeout(err: unknown): boolean {
  const code = errorCode(err);
  if (code !== undefined) return code === SqlState.LOCK_NOT_AVAILABLE;
  return /lock timeout/i.test((err as Error | undefined)?.message ?? '');
}

/**
 * Applies or rolls back unread-sync's migrations; returns the names that ran. They run one at a
 * time, each in its own transaction: one that hits the lock timeout is rolled back by Postgres
 * and retried with backoff, and the ones before it stay applied (and are reported).
 */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  const lockTimeoutMs = options.lockTimeoutMs ?? 1_000;
  const retries = options.retries ?? 8;
  const log = options.log ?? (() => {});
  const wanted = options.count ?? Infinity;
  const done: string[] = [];
  let attempt = 0;
  while (done.length < wanted) {
    try {
      const ran = await runner({
        databaseUrl: { connectionString: options.databaseUrl, options: `-c lock_timeout=${Math.round(lockTimeoutMs)}` },
        dir: MIGRATIONS_DIR,
        migrationsTable: MIGRATIONS_TABLE,
        direction: options.direction,
        count: 1,
        checkOrder: true,
        advisoryLockMode: 'wait',
        verbose: false,
        log: () => {}, // node-pg-migrate prints raw SQL and errors; the caller gets one line per event
      });
      if (ran.length === 0) break;
      for (const m of ran) {
        log(`migration ${options.direction}: ${m.name}`);
        done.push(m.name);
      }
      attempt = 0;
    } catch (err) {
      if (!isLockTimeout(err)) throw err;
      if (attempt >= retries || options.signal?.aborted) throw new MigrationLockError(attempt + 1, lockTimeoutMs, done);
      const delay = backoffDelay(attempt, 500, 15_000);
      attempt++;
      log(`migration waited ${lockTimeoutMs} ms for a lock on a busy table; rolled back, retry ${attempt}/${retries} in ${delay} ms`);
      await sleep(delay, options.signal);
    }
  }
  return done;
}

/**
 * Names of the shipped migrations not yet applied to this database (all of them on a fresh one;
 * none when the schema was installed without node-pg-migrate's record, e.g. by the Supabase CLI).
 */
export async function pendingMigrations(databaseUrl: string): Promise<string[]> {
  const shipped = readdirSync(MIGRATIONS_DIR)
    .filter((f) => /\.(sql|js)$/.test(f))
    .map((f) => f.replace(/\.(sql|js)$/, ''))
    .sort();
  const sql = connect(databaseUrl, { max: 1, applicationName: 'unread-sync schema check' });
  try {
    const { applied, schema } = await queries.appliedMigrations(sql, MIGRATIONS_TABLE);
    // Installed by another tool (the Supabase CLI applies supabase/migrations and records them
    // elsewhere): the schema is there, which is all this check can know.
    if (applied === null) return schema ? [] : shipped;
    const done = new Set(applied);
    return shipped.filter((n) => !done.has(n));
  } finally {
    await sql.end({ timeout: 5 });
  }
}
