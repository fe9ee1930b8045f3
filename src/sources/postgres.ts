import { connect, queries, type DatabaseIdentity, type LockHolder, type Sql } from '../db.js';
import type { Logger } from '../log.js';
import { SourceLeaseLostError, startPosition, type ChangeSource, type CycleHandler, type HydratedRoom } from './source.js';

export interface PostgresSourceOptions {
  databaseUrl: string;
  bridgeName: string;
  batchSize: number;
  /**
   * How often the applied position is saved, by a timer beside the cycles (a cycle never waits for
   * it). 0: every cycle saves its position before it returns (tests, and no replay at all).
   */
  checkpointIntervalMs: number;
  /** Poll interval right after changes; it doubles while idle, up to the bridge's poll interval. */
  pollMinMs: number;
  logMinAgeSeconds: number;
  logMaxAgeSeconds: number;
  log: Logger;
}

/** The session holding the bridge lock was replaced: another bridge may be active. */
const lockLost = (): SourceLeaseLostError => new SourceLeaseLostError('lock', 'database connection was replaced');

/** Rows one prune batch deletes at most: each batch is its own short transaction. */
const PRUNE_BATCH = 10_000;

/** How long one maintenance round may keep pruning (it runs beside the cycles). */
const PRUNE_ROUND_MS = 30_000;

/**
 * A cycle with at most this many changes is read in one statement (unread_sync.read_cycle);
 * larger ones with a cursor in a REPEATABLE READ transaction.
 */
const SMALL_CYCLE_ROWS = 2_000;

/** How long polling stays at its fastest after the last change. */
const HOT_MS = 1_000;

/** Users per query of a hydration read by the worker connections. */
const HYDRATE_SLICE = 1_000;
/** A cycle hydrating at least this many users reads them on the workers, in parallel. */
const PARALLEL_HYDRATE_MIN = 2 * HYDRATE_SLICE;
/** Worker connections that import a cycle's snapshot to read hydrations in it. */
const HYDRATE_WORKERS = 4;

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
  /** Polls, checkpoints, hydrations beside long cycles, metrics. */
  private pool: Sql;
  /** Opened on first use: connections that import a cycle's exported snapshot. */
  private workers: Sql | null = null;
  /** One connection: holds the advisory lock and runs the cycles. */
  private lockConn: Sql;
  /** Prune's own connection: a long prune never holds one the cycles, polls or checkpoints need. */
  private maintConn: Sql;
  private connected = false;
  /** Bumped on reconnect: a cycle abandoned by the bridge's watchdog must not move the position. */
  private generation = 0;
  private position: string | null = null;
  private persisted: string | null = null;
  private firstStart = false;
  /** The session holding the bridge lock: checkpoint writes on other connections are fenced by it. */
  private holder: LockHolder = { pid: -1, start: '' };
  /** A checkpoint write was refused: another session holds the lock now. */
  private fenced = false;
  /** Checkpoint writes run one after another, so a slow older one never lands after a newer one. */
  private writes: Promise<unknown> = Promise.resolve();
  private checkpointTimer: NodeJS.Timeout | null = null;
  private checkpointFailing = false;
  /** The previous cycle did not fit one statement: read the next one with the cursor directly. */
  private large = false;
  private stopping = false;
  private woken = false;
  private idleDelay: number;
  private lastChangeAt = 0;
  private wake: (() => void) | null = null;
  private unlisten: (() => Promise<void>) | null = null;

  constructor(private readonly options: PostgresSourceOptions) {
    this.idleDelay = options.pollMinMs;
    this.pool = connect(options.databaseUrl, { max: 2, applicationName: 'unread-sync bridge' });
    this.lockConn = connect(options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (lock)', keepAlive: true });
    this.maintConn = connect(options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (maintenance)' });
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
    this.stopping = false;
    const { locked, pid, start } = await queries.tryBridgeLock(this.lockConn, bridgeName);
    if (locked) {
      this.holder = { pid, start };
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
        this.holder = { pid: row.pid, start: row.start ?? '' };
      } catch (err) {
        if (signal.aborted) throw new Error('aborted while standing by');
        throw err;
      } finally {
        signal.removeEventListener('abort', cancel);
      }
      log.info({ bridge: bridgeName }, 'bridge lock acquired: taking over');
    }
    this.fenced = false;
    this.large = false;
    const resumed = await startPosition(this.pool, bridgeName, log, async (now) => {
      this.position = now;
      await this.persist();
    });
    this.position = resumed.position;
    // A first start that never completed a cycle stays one across restarts.
    this.firstStart ||= resumed.firstStart;
    this.persisted = this.position;
    if (this.options.checkpointIntervalMs > 0 && !this.checkpointTimer) {
      this.checkpointTimer = setInterval(() => this.checkpointBeside(), this.options.checkpointIntervalMs);
      this.checkpointTimer.unref();
    }
    if (!this.unlisten) {
      const sub = await this.pool.listen(
        'unread_sync',
        () => this.notify(),
        () => this.notify(),
      );
      this.unlisten = sub.unlisten;
    }
    log.info({ bridge: bridgeName, position: this.position }, 'postgres source active');
  }

  async cycle(hydrate: string[], handler: CycleHandler): Promise<number> {
    const previous = this.position;
    if (previous === null) throw new Error('source not started');
    if (this.fenced) throw lockLost();
    const generation = this.generation;
    const small = Math.min(this.options.batchSize, SMALL_CYCLE_ROWS);
    // Small cycles (nearly all of them) are one statement; a backlog goes through the cursor.
    // Many users to hydrate go through the cursor path too: its exported snapshot lets workers read them.
    const read =
      (this.large || hydrate.length >= PARALLEL_HYDRATE_MIN ? null : await this.readSmall(previous, hydrate, handler, small)) ??
      (await this.readLarge(previous, hydrate, handler));
    this.large = read.delivered > small;
    if (generation !== this.generation) throw new Error('cycle abandoned: the source reconnected meanwhile');
    if (read.delivered > 0) {
      this.idleDelay = this.options.pollMinMs;
      this.lastChangeAt = Date.now();
    }
    this.position = read.snapshot;
    this.firstStart = false;
    // The checkpoint is written beside the cycles (checkpointBeside); with no interval, here.
    if (this.options.checkpointIntervalMs <= 0) await this.persist();
    else if (read.gap) this.checkpointBeside();
    return read.delivered;
  }

  /**
   * The whole cycle in one statement (unread_sync.read_cycle): snapshot, lock check, gap, changes
   * and hydrations, all from the statement's snapshot. Null when the changes do not fit `limit`
   * (nothing was handed to the handler then).
   */
  private async readSmall(
    previous: string,
    hydrate: string[],
    handler: CycleHandler,
    limit: number,
  ): Promise<{ delivered: number; snapshot: string; gap: boolean } | null> {
    const rows = await queries.readCycle(this.lockConn, previous, this.options.bridgeName, hydrate, limit);
    const head = rows[0];
    if (head?.part !== 'head' || head.snapshot === null) throw new Error('read_cycle returned no head row');
    if (head.pid !== this.holder.pid) throw lockLost();
    const changes: unknown[] = [];
    const hydrated = new Map<string, HydratedRoom[]>(hydrate.map((id) => [id, []]));
    for (const r of rows) {
      if (r.part === 'change') {
        const { id, xid, kind, user_id, room_id, unread, negative, created_at } = r;
        changes.push({ id, xid, kind, user_id, room_id, unread, negative, created_at });
      } else if (r.part === 'room' && r.user_id !== null && r.room_id !== null && r.unread !== null) {
        hydrated.get(r.user_id)?.push({ roomId: r.room_id, unread: r.unread });
      }
    }
    if (changes.length > limit) return null;
    const gap = head.gap === true || this.firstStart;
    if (head.gap) this.options.log.warn({ previous }, 'change log was pruned past this bridge: resetting cache');
    await handler.begin({ gap, hydrated, snapshot: head.snapshot });
    if (changes.length > 0) await handler.chunk(changes);
    await handler.end();
    return { delivered: changes.length, snapshot: head.snapshot, gap };
  }

  /** A cycle of any size: REPEATABLE READ, the rows read through a cursor, chunk by chunk. */
  private async readLarge(
    previous: string,
    hydrate: string[],
    handler: CycleHandler,
  ): Promise<{ delivered: number; snapshot: string; gap: boolean }> {
    const conn = this.lockConn;
    let delivered = 0;
    let snapshot: string;
    let gap: boolean;
    await conn`begin isolation level repeatable read, read only`;
    try {
      // Exported, pipelined with the open (no extra round trip): workers read a many-user
      // hydration, and hydrations served during a long drain, in this cycle's snapshot.
      const [opened, exported] = await Promise.all([
        queries.openCycle(conn, previous, this.options.bridgeName),
        queries.exportSnapshot(conn),
      ]);
      if (opened.pid !== this.holder.pid) throw lockLost();
      snapshot = opened.snapshot;
      gap = opened.gap || this.firstStart;
      if (opened.gap) this.options.log.warn({ previous }, 'change log was pruned past this bridge: resetting cache');
      const readRooms = (users: string[]) => this.readInSnapshot(exported, users);
      const hydrated =
        hydrate.length === 0
          ? new Map<string, HydratedRoom[]>()
          : hydrate.length >= PARALLEL_HYDRATE_MIN
            ? await readRooms(hydrate)
            : await queries.unreadRooms(conn, hydrate);
      await handler.begin({ gap, hydrated, snapshot, readRooms });
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
    return { delivered, snapshot, gap };
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

  /**
   * Prunes in short batches until nothing is left to prune (or 30 s pass), so retention keeps up
   * with any write rate. Runs on its own connection, beside the cycles (the bridge never awaits
   * it); each batch reads the oldest rows by the created_at index and stops at the first row it
   * must keep, so a round costs what it deletes.
   */
  async maintain(): Promise<void> {
    const until = Date.now() + PRUNE_ROUND_MS;
    let total = 0;
    while (!this.stopping) {
      const deleted = await queries.prune(this.maintConn, this.options.logMinAgeSeconds, this.options.logMaxAgeSeconds, PRUNE_BATCH);
      total += deleted;
      if (deleted < PRUNE_BATCH || Date.now() > until) break;
    }
    if (total > 0) this.options.log.info({ deleted: total }, 'pruned change log');
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

  syncPartitions(): Promise<{ installed: number; reset: boolean }> {
    return queries.syncPartitions(this.pool);
  }

  recordCapture(firing: boolean): Promise<boolean> {
    return queries.recordCapture(this.pool, firing);
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
    const position = await queries.currentSnapshot(this.pool);
    this.position = position;
    await this.persist();
    return position;
  }

  /** Pending rows past the durable checkpoint. */
  backlog(): Promise<number> {
    return queries.backlog(this.pool, this.options.bridgeName);
  }

  async check(): Promise<void> {
    await this.pool`select 1`;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.checkpointTimer = null;
    try {
      if (this.position !== null && !(await this.saveCheckpoint())) {
        this.options.log.warn({ bridge: this.options.bridgeName }, 'final checkpoint refused: another bridge holds the lock');
      }
    } finally {
      await this.unlisten?.().catch(() => {});
      this.unlisten = null;
      const workers = this.workers;
      this.workers = null;
      await Promise.all([
        this.pool.end({ timeout: 5 }),
        this.lockConn.end({ timeout: 5 }),
        this.maintConn.end({ timeout: 5 }),
        workers?.end({ timeout: 5 }),
      ]);
    }
  }

  /**
   * Saves the newest applied position unless it is saved already; false when refused because this
   * bridge's lock session no longer holds the lock (it was ousted: the position is left to the
   * bridge that holds it, and the next cycle fails with SourceLeaseLostError). Writes are serialised.
   */
  saveCheckpoint(): Promise<boolean> {
    const run = this.writes.then(() => this.writeCheckpoint());
    this.writes = run.catch(() => {});
    return run;
  }

  private async writeCheckpoint(): Promise<boolean> {
    const { position, holder, generation } = this;
    if (position === null || position === this.persisted || holder.pid < 0) return true;
    const saved = await queries.saveCheckpoint(this.pool, this.options.bridgeName, position, holder);
    if (generation !== this.generation) return saved; // restarted meanwhile: start() re-read the position
    if (saved) {
      this.persisted = position;
    } else if (!this.fenced) {
      this.fenced = true;
      this.options.log.warn({ bridge: this.options.bridgeName }, 'checkpoint refused: this bridge no longer holds its lock');
    }
    return saved;
  }

  /** The checkpoint timer's tick (and a gap's immediate save): never awaited by a cycle. */
  private checkpointBeside(): void {
    this.saveCheckpoint().then(
      () => {
        this.checkpointFailing = false;
      },
      (err: unknown) => {
        // Once per episode: a database outage fails the cycles too, which restart the source.
        if (!this.checkpointFailing) this.options.log.warn({ err: (err as Error).message }, 'checkpoint write failed; retrying');
        this.checkpointFailing = true;
      },
    );
  }

  /** Saves the position now (first start, rewind, no checkpoint interval); throws when refused. */
  private async persist(): Promise<void> {
    if (!(await this.saveCheckpoint())) throw lockLost();
  }

  private async reconnect(): Promise<void> {
    this.generation++;
    this.holder = { pid: -1, start: '' };
    await this.unlisten?.().catch(() => {});
    this.unlisten = null;
    const old = [this.pool, this.lockConn, this.maintConn, ...(this.workers ? [this.workers] : [])];
    this.workers = null;
    this.pool = connect(this.options.databaseUrl, { max: 2, applicationName: 'unread-sync bridge' });
    this.lockConn = connect(this.options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (lock)', keepAlive: true });
    this.maintConn = connect(this.options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (maintenance)' });
    await Promise.all(old.map((c) => c.end({ timeout: 0 }).catch(() => {})));
  }

  private notify(): void {
    this.woken = true;
    this.wake?.();
  }
}
