import { connect, queries, type DatabaseIdentity, type HydratedRoom, type Sql } from '../db.js';
import type { Logger } from '../log.js';
import type { ChangeSource, CycleHandler } from './source.js';

export interface PostgresSourceOptions {
  databaseUrl: string;
  bridgeName: string;
  batchSize: number;
  checkpointIntervalMs: number;
  /** Poll interval right after changes; it doubles while idle, up to the bridge's poll interval. */
  pollMinMs: number;
  logMinAgeSeconds: number;
  logMaxAgeSeconds: number;
  log: Logger;
}

/** Thrown when the connection holding the bridge lock was replaced: another bridge may be active. */
export class LockLostError extends Error {
  constructor() {
    super('bridge lock lost (database connection was replaced)');
    this.name = 'LockLostError';
  }
}

/** Rows one prune() call deletes at most (its max_rows default). */
const PRUNE_BATCH = 100_000;

/** How long polling stays at its fastest after the last change. */
const HOT_MS = 1_000;

/** Users per query of a hydration read by the worker connections. */
const HYDRATE_SLICE = 1_000;
/** A cycle hydrating at least this many users reads them on the workers, in parallel. */
const PARALLEL_HYDRATE_MIN = 2 * HYDRATE_SLICE;
/** Worker connections that import a cycle's snapshot to read hydrations in it. */
const HYDRATE_WORKERS = 4;
/** A cycle with more changes than this exports its snapshot: hydrations are served during its drain. */
const LONG_CYCLE_ROWS = 5_000;
/** After this long without a cycle, the next one probes whether it is long (see mayBeLong). */
const IDLE_PROBE_MS = 20;

/**
 * The embedded default source: reads unread_sync.changes by snapshot difference.
 *
 * Each cycle opens a REPEATABLE READ transaction whose snapshot S' is the new position and reads
 * the rows visible in S' but not in the previous position S: no committed row is skipped however
 * out of order transactions commit, no uncommitted or rolled-back row is ever seen, and an open
 * transaction delays only its own rows. NOTIFY is used as a wake-up hint only.
 */
export class PostgresSource implements ChangeSource {
  readonly name = 'postgres';
  /** Large hydration lists are read in parallel by the workers, in the cycle's snapshot. */
  readonly maxHydratePerCycle = 16 * HYDRATE_SLICE;
  private pool: Sql;
  /** Opened on first use: connections that import a cycle's exported snapshot. */
  private workers: Sql | null = null;
  /** Events the last cycle delivered (-1: none since start), and when it ended. */
  private lastDelivered = -1;
  private lastCycleAt = 0;
  /** One connection: holds the advisory lock and runs the cycles. */
  private lockConn: Sql;
  private connected = false;
  /** Bumped on reconnect: a cycle abandoned by the bridge's watchdog must not move the position. */
  private generation = 0;
  private position: string | null = null;
  private persisted: string | null = null;
  private persistedAt = 0;
  private firstStart = false;
  private lockPid = -1;
  private woken = false;
  private idleDelay: number;
  private lastChangeAt = 0;
  private wake: (() => void) | null = null;
  private unlisten: (() => Promise<void>) | null = null;

  constructor(private readonly options: PostgresSourceOptions) {
    this.idleDelay = options.pollMinMs;
    this.pool = connect(options.databaseUrl, { max: 2, applicationName: 'unread-sync bridge' });
    this.lockConn = connect(options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (lock)', keepAlive: true });
  }

  /**
   * (Re)starts from scratch: after any failure the bridge calls start() again, and fresh
   * connections are opened rather than trusting a pool that saw its server restart or its
   * backends terminated mid-query.
   */
  async start(signal: AbortSignal): Promise<void> {
    const { log, bridgeName } = this.options;
    if (this.connected) await this.reconnect();
    this.connected = true;
    this.lastDelivered = -1;
    const { locked, pid } = await queries.tryBridgeLock(this.lockConn, bridgeName);
    if (locked) {
      this.lockPid = pid;
    } else {
      log.info({ bridge: bridgeName }, 'another bridge is active; standing by');
      // Wait inside Postgres: the lock is granted the moment the active bridge's session ends
      // (a 1 s poll added up to 1 s to every takeover). Aborting cancels the waiting statement.
      const waiting = queries.bridgeLock(this.lockConn, bridgeName);
      const cancel = () => void waiting.cancel();
      signal.addEventListener('abort', cancel, { once: true });
      try {
        const [row] = await waiting;
        if (!row) throw new Error('bridge lock query returned no row');
        this.lockPid = row.pid;
      } catch (err) {
        if (signal.aborted) throw new Error('aborted while standing by');
        throw err;
      } finally {
        signal.removeEventListener('abort', cancel);
      }
      log.info({ bridge: bridgeName }, 'bridge lock acquired: taking over');
    }
    this.position = await queries.readCheckpoint(this.pool, bridgeName);
    if (this.position === null) {
      // Nothing says what Redis holds: start from now and treat every cached user as unknown.
      this.position = await queries.currentSnapshot(this.pool);
      this.firstStart = true;
      await this.persist(this.position);
      log.info({ bridge: bridgeName }, 'first start: cache will be reset, users hydrate on demand');
    }
    this.persisted = this.position;
    if (!this.unlisten) {
      const sub = await this.pool.listen('unread_sync', () => this.notify(), () => this.notify());
      this.unlisten = sub.unlisten;
    }
    log.info({ bridge: bridgeName, position: this.position }, 'postgres source active');
  }

  async cycle(hydrate: string[], handler: CycleHandler): Promise<number> {
    const previous = this.position;
    if (previous === null) throw new Error('source not started');
    const conn = this.lockConn;
    const generation = this.generation;
    let delivered = 0;
    let snapshot: string;
    let gap: boolean;
    await conn`begin isolation level repeatable read, read only`;
    try {
      // Pipelined with the open (no extra round trip): the snapshot is exported when workers will
      // read in it, for a many-user hydration or hydrations served during a long drain.
      const [opened, exported] = await Promise.all([
        queries.openCycle(conn, previous, this.options.bridgeName),
        hydrate.length >= PARALLEL_HYDRATE_MIN
          ? queries.exportSnapshot(conn)
          : this.mayBeLong()
            ? queries.exportSnapshotIfLarge(conn, previous, LONG_CYCLE_ROWS)
            : Promise.resolve(null),
      ]);
      if (opened.pid !== this.lockPid) throw new LockLostError();
      snapshot = opened.snapshot;
      gap = opened.gap || this.firstStart;
      if (opened.gap) this.options.log.warn({ previous }, 'change log was pruned past this bridge: resetting cache');
      const readRooms = exported ? (users: string[]) => this.readInSnapshot(exported, users) : undefined;
      const hydrated =
        hydrate.length === 0
          ? new Map()
          : readRooms && hydrate.length >= PARALLEL_HYDRATE_MIN
            ? await readRooms(hydrate)
            : await queries.unreadRooms(conn, hydrate);
      await handler.begin({ gap, hydrated, snapshot, ...(readRooms ? { readRooms } : {}) });
      for await (const rows of queries.changesSince(conn, previous).cursor(this.options.batchSize)) {
        delivered += rows.length;
        await handler.chunk(rows);
      }
      await handler.end();
      await conn`commit`;
    } catch (err) {
      await conn`rollback`.catch(() => {});
      throw err;
    }
    if (generation !== this.generation) throw new Error('cycle abandoned: the source reconnected meanwhile');
    this.lastDelivered = delivered;
    this.lastCycleAt = Date.now();
    if (delivered > 0) {
      this.idleDelay = this.options.pollMinMs;
      this.lastChangeAt = Date.now();
    }
    this.position = snapshot;
    this.firstStart = false;
    if (gap || Date.now() - this.persistedAt >= this.options.checkpointIntervalMs) {
      await this.persist(snapshot);
    }
    return delivered;
  }

  /**
   * Polls the log with a cheap index probe: every `pollMinMs` right after changes, backing off
   * (doubling) to `timeoutMs` while idle. NOTIFY, when a database turns it on, wakes at once.
   */
  async waitForChanges(timeoutMs: number, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!signal.aborted && !this.woken && Date.now() < deadline) {
      await this.sleepOrWake(Math.min(this.idleDelay, deadline - Date.now()), signal);
      if (this.woken || signal.aborted || this.position === null) break;
      if (await queries.hasChangesSince(this.pool, this.position)) {
        this.idleDelay = this.options.pollMinMs;
        break;
      }
      // Stay at the fast interval for a while after the last change (chat traffic comes in
      // runs), then back off.
      if (Date.now() - this.lastChangeAt > HOT_MS) this.idleDelay = Math.min(this.idleDelay * 2, timeoutMs);
    }
    this.woken = false;
  }

  private sleepOrWake(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  /** Prunes in batches until nothing is left to prune (or 10 s pass), so retention keeps up with any write rate. */
  async maintain(): Promise<void> {
    const until = Date.now() + 10_000;
    let total = 0;
    for (;;) {
      const deleted = await queries.prune(this.pool, this.options.logMinAgeSeconds, this.options.logMaxAgeSeconds);
      total += deleted;
      if (deleted < PRUNE_BATCH || Date.now() > until) break;
    }
    if (total > 0) this.options.log.info({ deleted: total }, 'pruned change log');
  }

  /**
   * Whether the next cycle may be long enough to export its snapshot for: the bridge was idle for
   * a while (a large transaction may have committed meanwhile), the previous cycle delivered a
   * backlog, or this is the first cycle since start. Back-to-back small cycles under load (where a
   * statement more per cycle would show in the latency) skip even the probe.
   */
  private mayBeLong(): boolean {
    return Date.now() - this.lastCycleAt >= IDLE_PROBE_MS || this.lastDelivered >= LONG_CYCLE_ROWS || this.lastDelivered < 0;
  }

  /**
   * Users' rooms read in an exported snapshot by up to HYDRATE_WORKERS connections at once, each
   * taking slices of HYDRATE_SLICE users (one transaction per worker, importing the snapshot).
   * Valid while the exporting cycle's transaction is open.
   */
  private async readInSnapshot(snapshotId: string, userIds: string[]): Promise<Map<string, HydratedRoom[]>> {
    const workers = (this.workers ??= connect(this.options.databaseUrl, {
      max: HYDRATE_WORKERS,
      applicationName: 'unread-sync bridge (hydration)',
    }));
    const slices: string[][] = [];
    for (let i = 0; i < userIds.length; i += HYDRATE_SLICE) slices.push(userIds.slice(i, i + HYDRATE_SLICE));
    const out = new Map<string, HydratedRoom[]>();
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(HYDRATE_WORKERS, slices.length) }, () =>
        workers.begin('isolation level repeatable read read only', async (tx) => {
          await queries.importSnapshot(tx, snapshotId);
          while (next < slices.length) {
            const slice = slices[next++] as string[];
            for (const [user, rooms] of await queries.unreadRooms(tx, slice)) out.set(user, rooms);
          }
        }),
      ),
    );
    return out;
  }

  readHydration(userIds: string[]) {
    return queries.hydrationSnapshot(this.pool, userIds);
  }

  async captureProblems(): Promise<string[]> {
    const triggers = await queries.captureTriggers(this.pool);
    if (triggers.length === 0) return ['no capture trigger on public.chat_rooms'];
    // Only ENABLE ALWAYS ('A') captures every write: 'O' (a plain ENABLE, e.g. after a DISABLE)
    // skips writes under session_replication_role = replica (data-only restores, replication).
    const why: Record<string, string> = { D: 'disabled', R: 'replica only', O: 'origin only: ENABLE instead of ENABLE ALWAYS' };
    return triggers.filter((t) => t.enabled !== 'A').map((t) => `${t.table}.${t.trigger} (${why[t.enabled] ?? t.enabled})`);
  }

  identity(): Promise<DatabaseIdentity> {
    return queries.databaseIdentity(this.pool, this.options.bridgeName);
  }

  async restartFromNow(): Promise<string> {
    await queries.forgetForeignHistory(this.pool);
    this.position = await queries.currentSnapshot(this.pool);
    await this.persist(this.position);
    return this.position;
  }

  /** Pending rows past the durable checkpoint. */
  backlog(): Promise<number> {
    return queries.backlog(this.pool, this.options.bridgeName);
  }

  async check(): Promise<void> {
    await this.pool`select 1`;
  }

  async stop(): Promise<void> {
    try {
      if (this.position !== null && this.position !== this.persisted) await this.persist(this.position);
    } finally {
      await this.unlisten?.().catch(() => {});
      this.unlisten = null;
      const workers = this.workers;
      this.workers = null;
      await Promise.all([this.pool.end({ timeout: 5 }), this.lockConn.end({ timeout: 5 }), workers?.end({ timeout: 5 })]);
    }
  }

  private async reconnect(): Promise<void> {
    this.generation++;
    await this.unlisten?.().catch(() => {});
    this.unlisten = null;
    const old = [this.pool, this.lockConn, ...(this.workers ? [this.workers] : [])];
    this.workers = null;
    this.pool = connect(this.options.databaseUrl, { max: 2, applicationName: 'unread-sync bridge' });
    this.lockConn = connect(this.options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (lock)', keepAlive: true });
    await Promise.all(old.map((c) => c.end({ timeout: 0 }).catch(() => {})));
  }

  private async persist(snapshot: string): Promise<void> {
    await queries.saveCheckpoint(this.pool, this.options.bridgeName, snapshot);
    this.persisted = snapshot;
    this.persistedAt = Date.now();
  }

  private notify(): void {
    this.woken = true;
    this.wake?.();
  }
}
