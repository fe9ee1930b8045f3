import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import type { RealtimeChannel, RealtimeClientOptions, WebSocketLikeConstructor } from '@supabase/realtime-js';
import { decodeJwt } from 'jose';
import WebSocket from 'ws';
import { z } from 'zod';
import { connectPooled, queries, supabaseQueries, type Sql } from '../db.js';
import { parseEvent, xidSchema } from '../events.js';
import type { Logger } from '../log.js';
import type { Registry } from 'prom-client';
import { backoffDelay } from '../backoff.js';
import { isPlainObject, LiveMisses, readCatchup } from './catchup.js';
import { BridgeLease } from './lease.js';
import { RATE_LIMIT_MESSAGE, RealtimeHealth } from './realtime-health.js';
import { parseSnapshot, visibleIn, type Snapshot } from './snapshot.js';
import { startPosition, type ChangeSource, type CycleHandler } from './source.js';

// Imported from here by existing callers; they live in their own modules now.

export interface SupabaseSourceOptions {
  supabaseUrl: string;
  serviceRoleKey: string;
  /** Postgres for the durable catch-up; a transaction-mode pooler URL works (single statements only). */
  databaseUrl: string;
  bridgeName: string;
  /** Bridge topics unread-sync:bridge:0..shards-1; written to unread_sync.meta for the trigger. */
  shards: number;
  catchupIntervalMs: number;
  batchSize: number;
  logMinAgeSeconds: number;
  logMaxAgeSeconds: number;
  log: Logger;
  /** Lease on the bridge name (default 15 s, renewed every third of it). */
  leaseTtlMs?: number;
  /** Resubscribe backoff: full range [base, max] ms, equal jitter (defaults 250 / 10 000). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Live events held at most; past that the buffer is dropped and a catch-up reads the log. */
  maxBuffered?: number;
  /**
   * Supabase Realtime's quota averaging window (real: 12 ticks of 5 s = 60 s). After "Too many
   * messages per second" shut a topic, it is rejoined no sooner than this (doubling, up to 4x, if
   * the limit is met again); catch-ups keep badges correct meanwhile.
   */
  rateLimitWindowMs?: number;
  /** How often today's and tomorrow's realtime.messages partitions are checked (default 60 000; 0 = off). */
  partitionCheckIntervalMs?: number;
  /** Extra realtime-js options (tests: heartbeat, join timeout). */
  realtime?: Pick<RealtimeClientOptions, 'timeout' | 'heartbeatIntervalMs' | 'vsn' | 'logger'>;
  random?: () => number;
}

/** Counters a test or an operator can read; mutated in place. */
export interface SupabaseSourceStats {
  subscribed: number;
  channelErrors: number;
  timeouts: number;
  closed: number;
  lastChannelError: string | null;
  replicationReady: number;
  liveReceived: number;
  liveDelivered: number;
  /** Live events dropped because the last catch-up already covered them (their xid is visible in the position). */
  liveCovered: number;
  /** Broadcasts refused before the bridge (wrong event name, no valid xid). */
  rejected: number;
  lastRejection: string | null;
  bufferOverflows: number;
  catchups: number;
  /** Log rows read by all catch-ups; each committed row is read by exactly one catch-up. */
  catchupRows: number;
  lastCatchupRows: number;
  catchupPages: number;
  /** Catch-ups run because the server said the replication stream is live (replication_ready). */
  catchupsOnReady: number;
  /** Live batch messages (one per transaction and topic) and the changes they carried. */
  liveBatches: number;
  liveBatchChanges: number;
  /** Topics shut by the server over the message quota, and rejoins it delayed. */
  rateLimitShutdowns: number;
  /**
   * Log rows a catch-up applied that had not arrived over Realtime by the next catch-up: what the
   * live path lost (quota drops, missing partition, replication gap, at-most-once). `liveChecked`
   * is how many rows were compared.
   */
  liveMissed: number;
  liveChecked: number;
  /** System messages shutting a topic for other reasons (replication timeout, token, ...). */
  shutdowns: number;
  lastShutdown: string | null;
}

export const bridgeTopic = (shard: number): string => `unread-sync:bridge:${shard}`;
export const userTopic = (userId: string): string => `unread-sync:user:${userId}`;

/** A broadcast frame as realtime-js hands it over; the payload itself is validated by the bridge. */
const broadcastFrame = z.object({ event: z.string(), payload: z.unknown() });
const withXid = z.object({ xid: xidSchema });
/** A transaction's changes for one topic (migration 1764000000006); elements are checked one by one later. */
const batchFrame = z.object({ xid: xidSchema, changes: z.array(z.unknown()).max(100_000) });

interface Shard {
  index: number;
  channel: RealtimeChannel | null;
  live: boolean;
  attempt: number;
  timer: NodeJS.Timeout | null;
  /** The server shut this topic over the quota: rejoin no sooner than this (ms epoch). */
  pausedUntil: number;
}

/**
 * Supabase source: live events from Supabase Realtime "Broadcast from Database" (fast path),
 * reconciled from unread_sync.changes (the record).
 *
 * Realtime delivers at most once and drops what was sent while nobody listened, so after every
 * (re)subscribe and every `catchupIntervalMs` a catch-up reads, in one statement, the log rows
 * committed since the last catch-up's snapshot (position). Only catch-ups advance the position.
 * A live event whose xid is visible in the position is already covered and is dropped: that
 * keeps an old event that Realtime delivers late from landing on top of a newer hydration.
 */
export class SupabaseSource implements ChangeSource {
  readonly name = 'supabase';
  readonly stats: SupabaseSourceStats = {
    subscribed: 0,
    channelErrors: 0,
    timeouts: 0,
    closed: 0,
    lastChannelError: null,
    replicationReady: 0,
    liveReceived: 0,
    liveDelivered: 0,
    liveCovered: 0,
    rejected: 0,
    lastRejection: null,
    bufferOverflows: 0,
    catchups: 0,
    catchupRows: 0,
    lastCatchupRows: 0,
    catchupPages: 0,
    catchupsOnReady: 0,
    liveBatches: 0,
    liveBatchChanges: 0,
    rateLimitShutdowns: 0,
    liveMissed: 0,
    liveChecked: 0,
    shutdowns: 0,
    lastShutdown: null,
  };
  readonly health: RealtimeHealth;
  private realtimeMissing: string | null = null;
  private partitionTimer: NodeJS.Timeout | null = null;
  private catchupOnReady = false;
  /** Ids of events that arrived live, compared with what catch-ups read, one catch-up later. */
  private readonly liveMisses = new LiveMisses();
  private readonly sql: Sql;
  private readonly lease: BridgeLease;
  private readonly random: () => number;
  private client: SupabaseClient | null = null;
  private shards: Shard[] = [];
  private position: string | null = null;
  private positionParsed: Snapshot | null = null;
  private firstStart = false;
  private realtimeInstalled = false;
  private buffer: unknown[] = [];
  private catchupDue = true;
  private nextCatchupAt = 0;
  private wake: (() => void) | null = null;
  private stopped = false;
  private readonly keyProblem: string | null;

  constructor(private readonly options: SupabaseSourceOptions) {
    this.sql = connectPooled(options.databaseUrl, { max: 2, applicationName: 'unread-sync bridge (supabase)' });
    this.random = options.random ?? Math.random;
    this.lease = new BridgeLease(this.sql, {
      bridgeName: options.bridgeName,
      ttlMs: options.leaseTtlMs ?? 15_000,
      log: options.log,
      random: this.random,
      onLost: () => {
        void this.unsubscribeAll();
        this.wake?.();
      },
    });
    this.keyProblem = inspectKey(options.serviceRoleKey);
    this.health = new RealtimeHealth({ windowMs: options.rateLimitWindowMs ?? 60_000, log: options.log, random: this.random });
  }

  /** Realtime health metrics (quota episodes, partitions) on the bridge's registry. */
  observe(registry: Registry): void {
    this.health.observe(registry);
  }

  async start(signal: AbortSignal): Promise<void> {
    const { log, bridgeName } = this.options;
    this.stopped = false;
    await this.lease.acquire(signal);

    const resumed = await startPosition(this.sql, bridgeName, log, (now) => this.lease.saveCheckpoint(now));
    this.position = resumed.position;
    // A first start that never completed a catch-up stays one across restarts.
    this.firstStart ||= resumed.firstStart;
    this.positionParsed = parseSnapshot(this.position);
    this.realtimeInstalled = await supabaseQueries.realtimeInstalled(this.sql);
    if (this.realtimeInstalled) {
      await supabaseQueries.setRealtimeShards(this.sql, this.options.shards);
    } else {
      this.realtimeMissing = (await supabaseQueries.realtimeMissing(this.sql)) ?? 'no realtime schema when the realtime migration ran';
      log.error(
        { reason: this.realtimeMissing },
        'the realtime migration found no Supabase Realtime schema: no broadcasts, catch-ups only (re-run the realtime migrations once it exists)',
      );
    }
    this.armPartitionCheck();
    if (this.keyProblem) {
      this.stats.lastChannelError = this.keyProblem;
      log.error({ problem: this.keyProblem }, 'SUPABASE_SERVICE_ROLE_KEY cannot work; catch-ups keep badges correct meanwhile');
    }
    this.catchupDue = true;
    this.subscribeAll();
    log.info({ bridge: bridgeName, position: this.position, shards: this.options.shards }, 'supabase source active');
  }

  async cycle(hydrate: string[], handler: CycleHandler): Promise<number> {
    if (this.position === null || this.positionParsed === null) throw new Error('source not started');
    this.lease.check();
    this.health.settle(this.subscribedAll());
    if (hydrate.length > 0 || this.catchupDue || Date.now() >= this.nextCatchupAt) {
      if (this.catchupOnReady) this.stats.catchupsOnReady++;
      this.catchupOnReady = false;
      return this.catchUp(hydrate, handler);
    }
    const position = this.positionParsed;
    const raw = this.buffer.splice(0, this.options.batchSize);
    const rows: unknown[] = [];
    for (const payload of raw) {
      // Malformed events go on as they are: the bridge dead-letters them with the reason.
      if (!parseEvent(payload).ok) {
        rows.push(payload);
        continue;
      }
      const xid = withXid.safeParse(payload);
      if (!xid.success) {
        // A valid event without its xid cannot be ordered against the position: the catch-up has it.
        this.reject('broadcast payload has no valid xid', payload);
        continue;
      }
      if (visibleIn(BigInt(xid.data.xid), position)) {
        this.stats.liveCovered++;
        continue;
      }
      rows.push(payload);
    }
    await handler.begin({ gap: false, hydrated: new Map() });
    if (rows.length > 0) await handler.chunk(rows);
    await handler.end();
    this.stats.liveDelivered += rows.length;
    return rows.length;
  }

  waitForChanges(timeoutMs: number, signal: AbortSignal): Promise<void> {
    const untilCatchup = this.nextCatchupAt - Date.now();
    if (this.buffer.length > 0 || this.catchupDue || untilCatchup <= 0 || this.lease.lost || signal.aborted) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, Math.min(timeoutMs, untilCatchup));
      signal.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  /** One statement (pooler-safe): Supabase's `postgres` role is no superuser, so no event trigger. */
  syncPartitions(): Promise<{ installed: number; reset: boolean }> {
    return queries.syncPartitions(this.sql);
  }

  async maintain(): Promise<void> {
    const deleted = await queries.prune(this.sql, this.options.logMinAgeSeconds, this.options.logMaxAgeSeconds);
    if (deleted > 0) this.options.log.info({ deleted }, 'pruned change log');
  }

  backlog(): Promise<number> {
    return queries.backlog(this.sql, this.options.bridgeName);
  }

  /**
   * Throws while the database is unreachable or the live path cannot work: no broadcast installed,
   * a bridge topic not subscribed, the project rate-limited, a missing daily partition.
   */
  async check(): Promise<void> {
    await queries.ping(this.sql);
    if (!this.realtimeInstalled) {
      throw new Error(`realtime: broadcast not installed (${this.realtimeMissing ?? 'no realtime schema'}): catch-up only`);
    }
    const problems = this.health.problems();
    const live = this.shards.filter((s) => s.live).length;
    if (live < this.shards.length && !this.health.rateLimited()) {
      problems.unshift(
        `${live}/${this.shards.length} bridge topics subscribed` +
          (this.stats.lastChannelError ? ` (last error: ${this.stats.lastChannelError})` : ''),
      );
    }
    if (problems.length > 0) throw new Error(`realtime: ${problems.join('; ')}`);
  }

  /** True when every bridge topic is joined (tests wait for it). */
  subscribedAll(): boolean {
    return this.shards.length > 0 && this.shards.every((s) => s.live);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.lease.stop();
    if (this.partitionTimer) clearInterval(this.partitionTimer);
    this.partitionTimer = null;
    try {
      await this.unsubscribeAll();
      await this.lease.release();
    } finally {
      await this.sql.end({ timeout: 5 });
    }
  }

  // --- catch-up --------------------------------------------------------------------

  private async catchUp(hydrate: string[], handler: CycleHandler): Promise<number> {
    const previous = this.position;
    if (previous === null) throw new Error('source not started');
    // Cleared first: a subscribe that lands during this catch-up asks for another one.
    this.catchupDue = false;
    const { upto, read, pages, readIds } = await readCatchup(
      this.sql,
      {
        previous,
        hydrate,
        bridgeName: this.options.bridgeName,
        batchSize: this.options.batchSize,
        firstStart: this.firstStart,
        collectIds: this.realtimeInstalled && !this.firstStart,
        log: this.options.log,
      },
      handler,
    );
    await this.lease.saveCheckpoint(upto);
    this.position = upto;
    this.positionParsed = parseSnapshot(upto);
    this.firstStart = false;
    this.nextCatchupAt = Date.now() + this.options.catchupIntervalMs;
    this.stats.catchups++;
    this.stats.catchupRows += read;
    this.stats.lastCatchupRows = read;
    this.stats.catchupPages += pages;
    const check = this.liveMisses.settle(readIds);
    if (check) {
      this.stats.liveChecked += check.checked;
      this.stats.liveMissed += check.missed;
      this.health.onLiveCheck(check.checked, check.missed);
    }
    return read;
  }

  // --- partitions -----------------------------------------------------------------

  /** Checks the catalog for today's and tomorrow's partitions now and then every interval. */
  private armPartitionCheck(): void {
    const every = this.options.partitionCheckIntervalMs ?? 60_000;
    if (!this.realtimeInstalled || every <= 0 || this.partitionTimer) return;
    const run = (): void => {
      supabaseQueries
        .messagePartitions(this.sql)
        .then((days) => this.health.setPartitions(days.filter((d) => !d.present).map((d) => d.day)))
        .catch((err: unknown) => this.health.setPartitions(null, (err as Error).message));
    };
    run();
    this.partitionTimer = setInterval(run, every);
    this.partitionTimer.unref();
  }

  // --- realtime --------------------------------------------------------------------

  private realtimeClient(): SupabaseClient {
    if (this.client) return this.client;
    const { backoffBaseMs = 250, backoffMaxMs = 10_000 } = this.options;
    this.client = createClient(this.options.supabaseUrl, this.options.serviceRoleKey, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
      realtime: {
        // Node 20 has no global WebSocket.
        transport: WebSocket as unknown as WebSocketLikeConstructor,
        // Jittered, so a fleet of bridges does not reconnect in lockstep after an outage.
        reconnectAfterMs: (tries: number) => backoffDelay(tries - 1, backoffBaseMs, backoffMaxMs, this.random),
        ...this.options.realtime,
      },
    });
    return this.client;
  }

  private subscribeAll(): void {
    if (!this.realtimeInstalled) return;
    if (this.shards.length !== this.options.shards) {
      this.shards = Array.from({ length: this.options.shards }, (_, index) => ({
        index,
        channel: null,
        live: false,
        attempt: 0,
        timer: null,
        pausedUntil: 0,
      }));
    }
    for (const shard of this.shards) if (!shard.channel && !shard.timer) this.subscribe(shard);
  }

  private subscribe(shard: Shard): void {
    if (this.stopped || this.lease.lost) return;
    const client = this.realtimeClient();
    const channel = client.channel(bridgeTopic(shard.index), {
      // replication_ready: servers that support it say when the replication stream is live.
      config: { private: true, broadcast: { self: false, ack: false, replication_ready: true } },
    });
    shard.channel = channel;
    shard.live = false;
    channel
      .on('broadcast', { event: '*' }, (message: unknown) => this.onBroadcast(message))
      .on('system', {}, (payload: unknown) => {
        if (shard.channel === channel) this.onSystem(shard, payload);
      })
      .subscribe((status, err) => {
        if (shard.channel !== channel) return; // a discarded channel
        this.onStatus(shard, channel, status, err);
      });
  }

  private onStatus(shard: Shard, channel: RealtimeChannel, status: string, err?: Error): void {
    const { log } = this.options;
    if (status === 'SUBSCRIBED') {
      shard.live = true;
      shard.attempt = 0;
      this.stats.subscribed++;
      // Anything sent while this topic had no subscriber was never streamed: read the log.
      this.catchupDue = true;
      this.wake?.();
      log.info({ topic: bridgeTopic(shard.index) }, 'realtime topic subscribed');
      return;
    }
    shard.live = false;
    if (status === 'TIMED_OUT') this.stats.timeouts++;
    else if (status === 'CLOSED') this.stats.closed++;
    else this.stats.channelErrors++;
    // The server's reason when it gave one; a refused websocket says only "transport failure".
    const reason = `${status}${err?.message ? `: ${err.message}` : ''}${this.keyProblem ? ` (${this.keyProblem})` : ''}`;
    this.stats.lastChannelError = reason;
    this.discard(channel);
    shard.channel = null;
    if (this.stopped || this.lease.lost) return;
    let delay = backoffDelay(shard.attempt++, this.options.backoffBaseMs ?? 250, this.options.backoffMaxMs ?? 10_000, this.random);
    if (shard.pausedUntil > Date.now()) {
      // Shut over the quota: rejoining sooner only meets the same average and is shut again.
      delay = Math.max(delay, shard.pausedUntil - Date.now());
      shard.attempt = 0;
    } else {
      log.warn({ topic: bridgeTopic(shard.index), reason, retryInMs: delay }, 'realtime topic lost; resubscribing');
    }
    shard.timer = setTimeout(() => {
      shard.timer = null;
      this.subscribe(shard);
    }, delay);
    shard.timer.unref();
  }

  private onSystem(shard: Shard, payload: unknown): void {
    const p = z.object({ status: z.string(), message: z.string().optional() }).safeParse(payload);
    if (!p.success) return;
    if (p.data.status === 'ok') {
      this.stats.replicationReady++;
      // The stream is live only now: rows committed between the join's catch-up and this moment
      // were never streamed; one more catch-up reads them.
      this.catchupDue = true;
      this.catchupOnReady = true;
      this.wake?.();
      return;
    }
    const message = p.data.message ?? '';
    this.stats.shutdowns++;
    this.stats.lastShutdown = message;
    if (RATE_LIMIT_MESSAGE.test(message)) {
      // The close that follows must not rejoin at once; the live path is paused, catch-ups go on.
      this.stats.rateLimitShutdowns++;
      shard.pausedUntil = this.health.onRateLimited(message);
      this.catchupDue = true;
      this.wake?.();
    } else {
      this.options.log.warn({ topic: bridgeTopic(shard.index), message }, 'realtime system message');
    }
  }

  private onBroadcast(message: unknown): void {
    this.stats.liveReceived++;
    const frame = broadcastFrame.safeParse(message);
    if (!frame.success || (frame.data.event !== 'change' && frame.data.event !== 'changes')) {
      this.reject(frame.success ? `unexpected broadcast event "${frame.data.event.slice(0, 40)}"` : 'not a broadcast frame', message);
      return;
    }
    let events: unknown[] = [frame.data.payload];
    const noteSeen = (e: unknown): void => this.liveMisses.note(e);
    if (frame.data.event === 'changes') {
      // One message per transaction and topic: {xid, changes: [...]}. Each element is validated
      // on its own by the bridge (a bad one is dead-lettered, the rest applied); it carries the
      // batch's xid so it can be ordered against the position like a single event.
      const batch = batchFrame.safeParse(frame.data.payload);
      if (!batch.success) {
        this.reject(`malformed change batch: ${batch.error.issues[0]?.message ?? 'invalid'}`, message);
        return;
      }
      const { xid } = batch.data;
      events = batch.data.changes.map((e) => (isPlainObject(e) ? { ...e, xid } : e));
      events.forEach(noteSeen);
      this.stats.liveBatches++;
      this.stats.liveBatchChanges += events.length;
    } else {
      noteSeen(frame.data.payload);
    }
    const maxBuffered = this.options.maxBuffered ?? 100_000;
    if (this.buffer.length + events.length > maxBuffered) {
      // The bridge is far behind: the log has all of it, so read it from there instead.
      this.buffer = [];
      this.stats.bufferOverflows++;
      this.catchupDue = true;
    } else {
      for (const e of events) this.buffer.push(e);
    }
    this.wake?.();
  }

  private reject(reason: string, message: unknown): void {
    this.stats.rejected++;
    this.stats.lastRejection = reason;
    this.options.log.warn({ reason, sample: JSON.stringify(message)?.slice(0, 200) }, 'realtime broadcast rejected');
  }

  /**
   * Drops a channel without a leave round-trip. realtime-js removes channels *by topic* when one
   * closes, which would also drop the replacement subscribed under the same topic.
   */
  private discard(channel: RealtimeChannel): void {
    const client = this.client;
    if (!client) return;
    client.realtime.channels = client.realtime.channels.filter((c) => c !== channel);
    channel.teardown();
    // Best effort: also forget it in the underlying Phoenix socket (internal API, may change).
    const inner = (channel as unknown as { channelAdapter?: { channel?: unknown } }).channelAdapter?.channel;
    const socket = (
      client.realtime as unknown as { socketAdapter?: { getSocket?: () => { remove?: (c: unknown) => void } } }
    ).socketAdapter?.getSocket?.();
    if (inner && typeof socket?.remove === 'function') socket.remove(inner);
  }

  private async unsubscribeAll(): Promise<void> {
    for (const shard of this.shards) {
      if (shard.timer) clearTimeout(shard.timer);
      shard.timer = null;
      shard.live = false;
      shard.channel = null;
    }
    this.buffer = [];
    const client = this.client;
    this.client = null;
    if (client) await client.realtime.removeAllChannels().catch(() => {});
  }
}

/** Why a service key cannot work, when that can be told without the server (expired JWT). */
function inspectKey(key: string): string | null {
  if (key.startsWith('sb_')) return null; // new-style API keys are opaque
  try {
    const { exp } = decodeJwt(key);
    if (typeof exp === 'number' && exp * 1000 < Date.now()) {
      return `SUPABASE_SERVICE_ROLE_KEY expired at ${new Date(exp * 1000).toISOString()}`;
    }
    return null;
  } catch {
    return 'SUPABASE_SERVICE_ROLE_KEY is not a JWT';
  }
}
