import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import postgres from 'postgres';
import { Gauge, type Counter, type Registry } from 'prom-client';
import { connect, queries, replication, type DatabaseIdentity, type Sql } from '../db.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import { sleep } from '../sleep.js';
import { backoffDelay } from '../backoff.js';
import { counter } from './metrics.js';
import { parseCopyData, parseLsn, statusUpdate } from './pgoutput.js';
import { xidVisibleIn } from './snapshot.js';
import { PostgresSource, type PostgresSourceOptions } from './postgres.js';
import type { ChangeSource, CycleHandler } from './source.js';

/** Created by migration 1764000000009: inserts into unread_sync.changes. */
export const PUBLICATION = 'unread_sync_changes';

export interface LogicalSourceOptions extends PostgresSourceOptions {
  /** 'auto': stream when the server and role allow it, poll otherwise; 'logical': refuse to start without it. */
  mode: 'auto' | 'logical';
  /** No data or keepalive for this long: the stream counts as stalled and is replaced (default 10 s). */
  stallMs?: number;
}

/** UNREAD_SOURCE=logical on a server or role that cannot stream. */
export class LogicalUnavailableError extends UnreadSyncError {
  constructor(readonly reasons: string[]) {
    super(
      ErrorCode.LOGICAL_UNAVAILABLE,
      `UNREAD_SOURCE=logical, but logical decoding is unavailable: ${reasons.join('; ')} (UNREAD_SOURCE=auto polls instead)`,
    );
  }
}

/** A streamed commit not yet visible to the last cycle is forgotten after this (a safeguard only). */
const PENDING_MAX_MS = 1_000;
const BACKOFF_MIN_MS = 1_000;
/** As the postgres source: the probe stays at pollMinMs this long after a cycle delivered changes. */
const HOT_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

/**
 * Push source: the Postgres log source, woken by logical decoding instead of polling.
 *
 * The log (unread_sync.changes, read by snapshot difference) stays the record and the only data
 * path, with all its guarantees; the stream (pgoutput over a temporary slot, publication
 * unread_sync_changes) only says *when* to read: a commit that inserted log rows runs a cycle at
 * once. Until the slot exists (creating it waits for running transactions), after the stream
 * stalls or its walsender dies, and on servers without wal_level=logical (mode 'auto') it polls
 * exactly like the postgres source. A temporary slot retains no WAL once the bridge is gone.
 */
export class LogicalSource implements ChangeSource {
  readonly name = 'logical';
  private readonly inner: PostgresSource;
  /** A plain connection for the availability check and the slot clean-up wait. */
  private readonly sql: Sql;
  private streamStop: AbortController | null = null;
  private streamLoop: Promise<void> | null = null;
  private slot: string | null = null;
  private streaming = false;
  private decision: string | null = null;
  /** Streamed commits (32-bit xid -> time seen) that inserted log rows and no cycle has read yet. */
  private readonly pending = new Map<number, number>();
  private woken = false;
  /** Snapshot of the last completed cycle. */
  private lastSnapshot: string | null = null;
  private lastDeliveredAt = 0;
  private wake: ((byCommit: boolean) => void) | null = null;
  private failures: Counter | null = null;
  private wakeups: Counter | null = null;

  constructor(private readonly options: LogicalSourceOptions) {
    this.inner = new PostgresSource(options);
    this.sql = connect(options.databaseUrl, { max: 1, applicationName: 'unread-sync bridge (logical check)' });
  }

  /** 'logical' while commits arrive by the stream, 'polling' otherwise. */
  get mode(): 'logical' | 'polling' {
    return this.streaming ? 'logical' : 'polling';
  }

  /** The temporary slot in use or being created (null when polling only). */
  get slotName(): string | null {
    return this.slot;
  }

  async start(signal: AbortSignal): Promise<void> {
    // A restart after a failure, or a bridge about to stand by, must not keep a slot open.
    await this.stopStream();
    const { walLevel, mayReplicate, publication } = await queries.logicalAvailability(this.sql);
    const reasons: string[] = [];
    if (walLevel !== 'logical') reasons.push(`wal_level is ${walLevel} (logical decoding needs wal_level=logical, a server restart)`);
    if (!mayReplicate) reasons.push('the role has neither REPLICATION nor superuser (ALTER ROLE ... REPLICATION)');
    if (!publication) reasons.push(`publication ${PUBLICATION} is missing (migration 1764000000009 needs CREATE on the database)`);
    if (reasons.length > 0 && this.options.mode === 'logical') throw new LogicalUnavailableError(reasons);
    const decision =
      reasons.length === 0
        ? 'change source: logical decoding (wal_level=logical, the role may replicate); commits wake the bridge, the log is still read by snapshot difference'
        : `change source: polling the log (${reasons.join('; ')})`;
    if (decision !== this.decision) {
      this.options.log.info({ source: reasons.length === 0 ? 'logical' : 'polling', configured: this.options.mode }, decision);
      this.decision = decision;
    }
    await this.inner.start(signal);
    if (reasons.length === 0) this.startStream();
  }

  async cycle(hydrate: string[], handler: CycleHandler): Promise<number> {
    let snapshot: string | undefined;
    const delivered = await this.inner.cycle(hydrate, {
      begin: (ctx) => {
        snapshot = ctx.snapshot;
        return handler.begin(ctx);
      },
      chunk: (rows) => handler.chunk(rows),
      end: () => handler.end(),
    });
    // Streamed commits this cycle's snapshot contains are read.
    if (delivered > 0) this.lastDeliveredAt = Date.now();
    if (snapshot !== undefined) {
      this.lastSnapshot = snapshot;
      for (const xid of this.pending.keys()) if (xidVisibleIn(xid, snapshot)) this.pending.delete(xid);
    }
    return delivered;
  }

  /**
   * Streaming: the first of a streamed commit with log rows and the postgres source's index probe
   * (every `pollMinMs` right after changes, backing off to `timeoutMs` while idle). Under a steady
   * write rate the probe is as fast and has no decoding lag (the stream alone gave p50 59-218 ms
   * at 1,000-2,000 commits/s on this loaded machine); when writes are rare the stream wakes the
   * bridge long before the backed-off probe. Polling: the probe alone. A streamed
   * commit the last cycle did not see yet (the walsender can send a commit a moment before it is
   * visible to new snapshots) wakes again after `pollMinMs`, until a cycle has read it.
   */
  async waitForChanges(timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (!this.streaming) return this.inner.waitForChanges(timeoutMs, signal);
    const now = Date.now();
    for (const [xid, seen] of this.pending) if (now - seen > PENDING_MAX_MS) this.pending.delete(xid);
    if (!this.woken && this.pending.size > 0) {
      await sleep(Math.min(this.options.pollMinMs, timeoutMs), signal);
      return;
    }
    if (!this.woken) {
      const probe = new AbortController();
      const stopProbe = () => probe.abort();
      signal.addEventListener('abort', stopProbe, { once: true });
      let byStream = false;
      const streamed = new Promise<void>((resolve) => {
        this.wake = (byCommit) => {
          byStream = byCommit;
          resolve();
        };
      });
      // The probe may finish its current query after the race; nothing waits for it.
      const polled = this.inner.waitForChanges(timeoutMs, probe.signal).catch(() => {});
      await Promise.race([streamed, polled]);
      this.wake = null;
      probe.abort();
      signal.removeEventListener('abort', stopProbe);
      if (byStream) this.wakeups?.inc();
    }
    this.woken = false;
  }

  observe(registry: Registry): void {
    const source = this;
    new Gauge({
      name: 'unread_sync_source_mode',
      help: 'How the bridge learns of new changes: 1 on the current mode (logical = streamed commits, polling = index probe)',
      labelNames: ['mode'],
      registers: [registry],
      collect() {
        this.set({ mode: 'logical' }, source.streaming ? 1 : 0);
        this.set({ mode: 'polling' }, source.streaming ? 0 : 1);
      },
    });
    this.failures = counter(
      registry,
      'unread_sync_logical_stream_failures_total',
      'Logical replication streams that failed or stalled (the bridge polled until a new slot streamed)',
    );
    this.wakeups = counter(
      registry,
      'unread_sync_logical_wakeups_total',
      'Waits for changes that a streamed commit ended before the index probe did',
    );
    (this.inner as ChangeSource).observe?.(registry);
  }

  // Everything else is the postgres source's.

  identity(): Promise<DatabaseIdentity> {
    return this.inner.identity();
  }

  async restartFromNow(): Promise<string> {
    this.pending.clear();
    this.lastSnapshot = null;
    return this.inner.restartFromNow();
  }

  captureProblems(): Promise<string[]> {
    return this.inner.captureProblems();
  }

  readHydration(userIds: string[]) {
    return this.inner.readHydration(userIds);
  }

  /** See PostgresSource.saveCheckpoint (fenced by the lock holder). */
  saveCheckpoint(): Promise<boolean> {
    return this.inner.saveCheckpoint();
  }

  syncPartitions(): Promise<{ installed: number; reset: boolean }> {
    return this.inner.syncPartitions();
  }

  recordCapture(firing: boolean): Promise<boolean> {
    return this.inner.recordCapture(firing);
  }

  maintain(): Promise<void> {
    return this.inner.maintain();
  }

  backlog(): Promise<number> {
    return this.inner.backlog();
  }

  check(): Promise<void> {
    return this.inner.check();
  }

  async stop(): Promise<void> {
    try {
      await this.stopStream();
      await this.inner.stop();
    } finally {
      await this.sql.end({ timeout: 5 });
    }
  }

  private startStream(): void {
    const stop = new AbortController();
    this.streamStop = stop;
    this.streamLoop = this.runStream(stop.signal);
  }

  private async stopStream(): Promise<void> {
    const slot = this.slot;
    this.streamStop?.abort();
    await this.streamLoop;
    this.streamStop = null;
    this.streamLoop = null;
    this.setStreaming(false);
    // A temporary slot goes when its walsender exits, a moment after the connection closed;
    // wait for it so a stopped bridge leaves nothing behind (DROP DATABASE refuses active slots).
    if (slot) {
      const until = Date.now() + 5_000;
      while (Date.now() < until && (await queries.replicationSlotExists(this.sql, slot).catch(() => false))) await sleep(20);
    }
  }

  /** Opens a slot and streams until stopped; after a failure or stall, polls and retries with backoff. */
  private async runStream(stop: AbortSignal): Promise<void> {
    const { log } = this.options;
    let attempt = -1;
    while (!stop.aborted) {
      const startedAt = Date.now();
      try {
        await this.streamOnce(stop);
      } catch (err) {
        if (stop.aborted) break;
        this.failures?.inc();
        log.warn(
          { err: (err as Error).message, slot: this.slot },
          'logical replication stream ended: polling the log until a new slot streams',
        );
      } finally {
        this.setStreaming(false);
      }
      if (stop.aborted) break;
      // A stream that ran for a while gets a quick retry; repeated failures back off.
      attempt = Date.now() - startedAt > BACKOFF_MAX_MS ? 0 : attempt + 1;
      await sleep(backoffDelay(attempt, BACKOFF_MIN_MS, BACKOFF_MAX_MS), stop);
    }
    this.slot = null;
  }

  private async streamOnce(stop: AbortSignal): Promise<void> {
    const { databaseUrl, bridgeName, log } = this.options;
    // Slot names are [a-z0-9_]{1,63}: built here, never taken from input as is.
    const slot = `unread_sync_${bridgeName
      .toLowerCase()
      .replace(/[^a-z0-9_]/g, '_')
      .slice(0, 40)}_${randomBytes(4).toString('hex')}`;
    this.slot = slot;
    const repl = postgres(databaseUrl, {
      max: 1,
      fetch_types: false,
      idle_timeout: 0,
      max_lifetime: null,
      onnotice: () => {},
      connection: { application_name: 'unread-sync bridge (logical)', replication: 'database' },
      types: {},
    });
    let creating: ReturnType<typeof replication.createTemporarySlot> | null = null;
    let ended: (() => void) | null = null;
    const onAbort = () => {
      void creating?.cancel();
      ended?.();
    };
    stop.addEventListener('abort', onAbort, { once: true });
    try {
      // Waits for every transaction running now to end: meanwhile the bridge polls.
      creating = replication.createTemporarySlot(repl, slot);
      const [created] = await creating;
      creating = null;
      if (stop.aborted) return;
      const start = String(created?.consistent_point ?? '');
      let lsn = parseLsn(start);
      // CopyBoth: postgres.js hands back a Duplex (typed as Writable).
      const s = (await replication.start(repl, slot, start, PUBLICATION).writable()) as unknown as Duplex;
      log.info({ slot, lsn: start }, 'logical replication stream open: commits wake the bridge');
      // Commits before the consistent point were not streamed: one cycle reads them (its
      // snapshot is taken after this point); every later commit arrives by the stream.
      this.setStreaming(true);
      this.notify();
      const stallMs = this.options.stallMs ?? 10_000;
      await new Promise<void>((resolve, reject) => {
        let lastSeen = Date.now();
        let xid: number | null = null;
        let inserts = 0;
        const fail = (err: Error) => {
          clearInterval(timer);
          reject(err);
        };
        ended = () => {
          clearInterval(timer);
          resolve();
        };
        // Asks for a keepalive every quarter of the stall limit (it also confirms what was
        // received, so the slot frees WAL); no answer within the limit means a stalled stream.
        const timer = setInterval(
          () => {
            if (Date.now() - lastSeen > stallMs) fail(new Error(`no data or keepalive for ${stallMs} ms`));
            else s.write(statusUpdate(lsn, true));
          },
          Math.max(50, Math.floor(stallMs / 4)),
        );
        s.on('data', (buf: Buffer) => {
          lastSeen = Date.now();
          const m = parseCopyData(buf);
          if (m.type === 'keepalive') {
            // Between transactions everything up to the server's WAL end was seen.
            if (xid === null && m.end > lsn) lsn = m.end;
            if (m.replyRequested) s.write(statusUpdate(lsn, false));
          } else if (m.type === 'xlog') {
            const msg = m.message;
            if (msg.tag === 'begin') {
              xid = msg.xid;
              inserts = 0;
            } else if (msg.tag === 'insert') {
              inserts++;
            } else if (msg.tag === 'commit') {
              // No news: a commit a cycle already read (the stream lags under load), or any commit
              // while changes flow (the probe runs every pollMinMs then; a wake-up per commit
              // would only add empty cycles).
              const hot = Date.now() - this.lastDeliveredAt < HOT_MS;
              if (xid !== null && inserts > 0 && !hot && !(this.lastSnapshot !== null && xidVisibleIn(xid, this.lastSnapshot))) {
                this.pending.set(xid, Date.now());
                this.notify(true);
              }
              xid = null;
              if (msg.endLsn > lsn) lsn = msg.endLsn;
            }
          }
        });
        s.on('error', (err: Error) => fail(err));
        s.on('close', () => fail(new Error('replication connection closed')));
        if (stop.aborted) ended();
      });
    } finally {
      stop.removeEventListener('abort', onAbort);
      ended = null;
      this.setStreaming(false);
      await repl.end({ timeout: 0 }).catch(() => {});
    }
  }

  private setStreaming(on: boolean): void {
    if (this.streaming === on) return;
    this.streaming = on;
    if (!on) this.pending.clear();
    // A waiter on the stream must go back to polling now.
    this.notify();
  }

  private notify(byCommit = false): void {
    this.woken = true;
    this.wake?.(byCommit);
  }
}
