import { ageMs, parseEvent, type SetEvent } from '../events.js';
import type { Logger } from '../log.js';
import { BridgeMetrics } from './metrics.js';
import type { ChangeSource, CycleHandler, HydratedRoom } from '../sources/source.js';
import { snapshotStamp, type RoomChange, type SnapshotStamp, type UnreadStore } from '../store/store.js';
import { parseUserId } from '../ids.js';
import { backoffDelay } from '../backoff.js';
import { sleep } from '../sleep.js';
import { ErrorCode, SqlState, UnreadSyncError, errorCode } from '../errors.js';
import { ApplyStatus } from '../store/status.js';
import { matchesTruth } from '../truth.js';

export interface BridgeStatus {
  /** Holds the source (e.g. the Postgres lock); false while standing by or reconnecting. */
  active: boolean;
  lastCycleAt: Date | null;
  lastError: string | null;
  /** Set while capture triggers on chat_rooms do not fire: changes are not being logged. */
  captureProblem: string | null;
}

export interface BridgeOptions {
  source: ChangeSource;
  store: UnreadStore;
  log: Logger;
  metrics?: BridgeMetrics;
  hydrateBatchSize?: number;
  pollIntervalMs?: number;
  maintainIntervalMs?: number;
  /** Every this often, compare a page of cached users with the database in a cycle's snapshot; 0 = off. */
  verifyIntervalMs?: number;
  verifySampleSize?: number;
  /** A cycle taking longer is abandoned and the source restarted (a hung connection must not stall badges). */
  cycleTimeoutMs?: number;
  /**
   * Test hook between source and apply: may drop, duplicate or reorder raw events.
   * Used by the fault tests to prove versions make delivery order irrelevant.
   */
  interceptor?: (rows: unknown[]) => unknown[];
  /** Called with every valid change of a chunk once it was handed to Redis (Supabase-direct publisher). */
  onChanges?: (events: SetEvent[]) => Promise<void>;
  /** Test hook: awaited right before a cycle writes its hydrations (to pause a bridge there). */
  beforeHydrate?: () => Promise<void>;
  /** A cycle running longer than this has hydration requests answered beside it (default 100 ms). */
  sideHydrationAfterMs?: number;
  /** How often to compare the database's identity and horizons with Redis's (0 = every cycle). */
  identityCheckMs?: number;
  /** The bridge's name: the Redis key prefix is claimed for it (null/absent: no claim). */
  bridgeName?: string;
}

/** A bridge with another name owns the key prefix: two bridge names must not share one prefix. */
export class PrefixOwnedError extends UnreadSyncError {
  constructor(readonly owner: string) {
    super(
      ErrorCode.PREFIX_OWNED,
      `the Redis key prefix is owned by bridge "${owner}"; give each bridge name its own UNREAD_KEY_PREFIX (or stop that bridge)`,
    );
  }
}

/** A cycle running longer than this has hydration requests answered beside it. */
const SIDE_HYDRATION_AFTER_MS = 100;
const SIDE_HYDRATION_POLL_MS = 25;
/** During a long drain, the hydration queue is looked at this often between chunk parts (or on a wake-up). */
const DRAIN_HYDRATION_POLL_MS = 10;
const YIELD_EVERY_ROWS = 500;
/** A drain sends its Redis writes once this many users have changes (checked every YIELD_EVERY_ROWS rows). */
const FLUSH_USERS = 1_024;
/** Users per store.hydrate call when a cycle writes its hydrations. */
const HYDRATE_WRITE_PART = 1_024;
/** Apply parts in flight to Redis at once during a drain. */
const APPLIES_IN_FLIGHT = 4;

/** How long a bridge's claim on its key prefix lasts without renewal. */
const OWNER_TTL_MS = 30_000;

/**
 * The bridge: pulls cycles from a change source, validates every event, applies them to Redis
 * through the store's Lua scripts, serves hydration requests in the same consistent snapshot,
 * and lets the source advance its position only after Redis has applied everything.
 */
export class Bridge {
  readonly metrics: BridgeMetrics;
  private readonly pendingHydration = new Set<string>();
  private hydrationWake: (() => void) | null = null;
  /** A hydration request was published since the queue was last looked at (set by the subscriber). */
  private hydrationAsked = false;
  private readonly hydrateBatchSize: number;
  private readonly verifyPosition = { node: 0, cursor: '0' };
  private verifyDueAt = 0;
  /** Bumped when the watchdog abandons a cycle: the abandoned one must not write hydrations late. */
  private generation = 0;
  /** Last time the running cycle made progress (a chunk applied); the watchdog judges this. */
  private progressAt = Date.now();
  private state: BridgeStatus = { active: false, lastCycleAt: null, lastError: null, captureProblem: null };
  private identityDueAt = 0;
  private noPartitionSync = false;
  /** Users the verifier found different, compared again next cycle after an identity check. */
  private recheck: string[] = [];
  private recheckRound = false;
  private sideStore: UnreadStore | null = null;
  /** Highest cycle xmax and log id this bridge knows Redis reflects (written to the prefix's meta). */
  private marks = { xmax: 0n, logId: 0n };

  constructor(private readonly options: BridgeOptions) {
    this.metrics = options.metrics ?? new BridgeMetrics();
    this.hydrateBatchSize = options.hydrateBatchSize ?? 500;
  }

  status(): BridgeStatus {
    return { ...this.state };
  }

  /** Closes the extra Redis connection used for hydrations beside long cycles (run() does this itself). */
  dispose(): void {
    this.sideStore?.redis.disconnect();
    this.sideStore = null;
  }

  /** Queues users to load from the database in the next cycle (single-flight per user). */
  requestHydration(userIds: string[]): void {
    for (const id of userIds) this.pendingHydration.add(id);
    if (userIds.length > 0) this.hydrationWake?.();
  }

  /** Runs one read cycle; returns the number of events the source delivered. */
  async runOnce(): Promise<number> {
    const { store, source } = this.options;
    const generation = this.generation;
    const current = () => {
      if (generation !== this.generation) throw new UnreadSyncError(ErrorCode.CYCLE_STALLED, 'cycle abandoned by the watchdog');
    };
    if ((source.identity || source.syncPartitions) && Date.now() >= this.identityDueAt) {
      this.identityDueAt = Date.now() + (this.options.identityCheckMs ?? 5_000);
      await this.checkDatabase();
      await this.checkPartitions();
      await this.checkCapture();
    }
    await this.collectHydrationRequests();
    const hydrate = [...this.pendingHydration].slice(0, this.hydratePerCycle());
    const verifying = (await this.verificationSample()).filter((u) => !this.pendingHydration.has(u));
    const skipUsers = new Set(hydrate);
    let read = new Map<string, HydratedRoom[]>();
    let stamp: SnapshotStamp | null = null;
    let events = 0;
    let maxId = 0n;
    const servedBeside = new Set<string>();
    // Apply calls sent to Redis and not yet answered (bounded; see flush below).
    let inFlight: Array<Promise<void>> = [];
    // The last part sent with changes of each user: a hydration during the drain waits for its
    // users' parts only, not for every part in flight (up to tens of thousands of changes).
    let lastPart = new Map<string, Promise<void>>();
    const settle = async () => {
      const all = inFlight;
      inFlight = [];
      lastPart = new Map();
      await Promise.all(all);
    };
    let readRooms: ((users: string[]) => Promise<Map<string, HydratedRoom[]>>) | undefined;
    let draining = false;
    let begun = false;
    let groups = new Map<string, Map<string, RoomChange>>();
    let lookedAt = Date.now();
    /**
     * Between parts of a long drain: hydration requests are read in the cycle's own snapshot (on
     * the source's workers) and written at once, stamped like the cycle's. Changes of those users
     * already sent to Redis are awaited first, and the rest of this cycle's are skipped: the
     * snapshot contains them.
     */
    const serveDuringDrain = async () => {
      if (!readRooms || (!this.hydrationAsked && Date.now() - lookedAt < DRAIN_HYDRATION_POLL_MS)) return;
      this.hydrationAsked = false;
      lookedAt = Date.now();
      // Its own Redis connection: on the bridge's, these would queue behind the pipelined applies.
      const side = (this.sideStore ??= store.duplicate());
      await this.collectHydrationRequests(side);
      // The cycle's own list was read at its start, in this snapshot: written now, not at its end.
      const own = hydrate.filter((u) => !servedBeside.has(u));
      const users = [...this.pendingHydration].filter((u) => !skipUsers.has(u)).slice(0, this.hydratePerCycle());
      if (users.length === 0 && own.length === 0) return;
      const rooms = users.length > 0 ? await readRooms(users) : new Map<string, HydratedRoom[]>();
      await Promise.all(users.map((u) => lastPart.get(u)));
      current();
      for (const u of users) {
        skipUsers.add(u);
        groups.delete(u);
      }
      const batch = new Map([
        ...own.map((u): [string, HydratedRoom[]] => [u, read.get(u) ?? []]),
        ...users.map((u): [string, HydratedRoom[]] => [u, rooms.get(u) ?? []]),
      ]);
      const written = await side.hydrate(batch, stamp);
      this.progressAt = Date.now();
      this.metrics.hydrations.inc(written.size);
      this.metrics.staleRefused.inc(batch.size - written.size);
      for (const u of batch.keys()) {
        this.pendingHydration.delete(u);
        servedBeside.add(u);
      }
    };

    // A reset forgets users loaded beside this cycle before it (a reset's SCAN may have deleted
    // what they wrote): this cycle's own list loads them again in end(), others are queued again.
    const forgetServed = () => {
      for (const u of servedBeside) if (!skipUsers.has(u)) this.pendingHydration.add(u);
      servedBeside.clear();
    };

    const handler: CycleHandler = {
      begin: async (ctx) => {
        // Changes already contained in the hydration snapshot must not be applied again
        // (skipUsers); users being verified get them applied, so at the end of the cycle their
        // cache must equal the snapshot.
        read = ctx.hydrated;
        readRooms = ctx.readRooms;
        stamp = ctx.snapshot ? snapshotStamp(ctx.snapshot) : null;
        current();
        // Reading a big hydration list, and a reset (a SCAN of the whole keyspace), are work
        // done: the watchdog judges progress, and a first start must not be abandoned forever.
        this.progressAt = Date.now();
        if (ctx.gap) {
          await this.reset('gap or first start', stamp);
          forgetServed();
        }
        this.progressAt = Date.now();
        begun = true;
      },
      chunk: async (raw) => {
        draining = true;
        await serveDuringDrain();
        const rows = this.options.interceptor ? this.options.interceptor(raw) : raw;
        // Per user, per room: only the newest version of a chunk goes to Redis. Values are
        // absolute, so an older change of the same room in the same chunk is superseded anyway.
        groups = new Map();
        let superseded = 0;
        const valid: SetEvent[] = [];
        // Pipelined: a chunk's Redis writes go out in parts while the source fetches and this
        // handler parses the rest, several parts in flight. They keep their order on the
        // connection, and versions would make any order give the same state anyway.
        const flush = async () => {
          while (inFlight.length >= APPLIES_IN_FLIGHT) await inFlight.shift();
          if (groups.size > 0) {
            const sent = this.applyGroups(new Map([...groups].map(([user, rooms]) => [user, [...rooms.values()]])), stamp);
            sent.catch(() => {}); // surfaced when awaited (flush or settle)
            inFlight.push(sent);
            for (const user of groups.keys()) lastPart.set(user, sent);
          }
          this.metrics.changesSkipped.inc(superseded);
          groups = new Map();
          superseded = 0;
        };
        let sinceYield = 0;
        for (const row of rows) {
          // Give the event loop a turn now and then: a 20,000-row chunk parsed in one go held
          // timers and I/O (hydrations beside the cycle, the watchdog) for up to a second.
          if (++sinceYield >= YIELD_EVERY_ROWS) {
            sinceYield = 0;
            if (groups.size >= FLUSH_USERS) await flush();
            await new Promise<void>((resolve) => setImmediate(resolve));
            await serveDuringDrain();
          }
          const parsed = parseEvent(row);
          if (!parsed.ok) {
            await this.deadLetter(parsed.reason, row);
            continue;
          }
          const event = parsed.event;
          const id = BigInt(event.id);
          if (id > maxId) maxId = id;
          if (event.kind === 'reset') {
            await flush();
            await settle();
            current();
            await this.reset('chat_rooms truncated', stamp);
            forgetServed();
            continue;
          }
          this.observe(event);
          if (this.options.onChanges) valid.push(event);
          if (skipUsers.has(event.user_id)) continue;
          let rooms = groups.get(event.user_id);
          if (!rooms) groups.set(event.user_id, (rooms = new Map()));
          const seen = rooms.get(event.room_id);
          if (seen && Number(seen.version) >= Number(event.id)) {
            superseded++;
            continue;
          }
          if (seen) superseded++;
          rooms.set(event.room_id, { roomId: event.room_id, unread: event.unread, version: event.id });
        }
        events += rows.length;
        await flush();
        if (this.options.onChanges && valid.length > 0) await this.options.onChanges(valid);
        this.progressAt = Date.now();
      },
      end: async () => {
        await settle();
        // A hydration written late would overwrite newer state: an abandoned cycle stops here.
        current();
        // Users already loaded beside this cycle (in a newer snapshot) are done.
        const hydrated = new Map(hydrate.filter((u) => !servedBeside.has(u)).map((u) => [u, read.get(u) ?? []]));
        if (hydrated.size > 0) {
          await this.options.beforeHydrate?.();
          // Stamped: if this bridge was paused and another one has written newer state since,
          // Redis refuses these (counted, not an error: the newer state stays).
          // In parts, each one progress for the watchdog (a rebuild's cycle writes thousands).
          const list = [...hydrated];
          for (let i = 0; i < list.length; i += HYDRATE_WRITE_PART) {
            current();
            const part = new Map(list.slice(i, i + HYDRATE_WRITE_PART));
            const written = await store.hydrate(part, stamp);
            this.progressAt = Date.now();
            this.metrics.hydrations.inc(written.size);
            this.metrics.staleRefused.inc(part.size - written.size);
          }
        }
        if (verifying.length > 0) await this.verifyAgainst(verifying, read, stamp);
        await this.raiseMarks(stamp, maxId);
        // Before the source may advance: the cycle's writes must survive a master failover.
        const unconfirmed = await store.awaitReplication();
        if (unconfirmed > 0) this.options.log.warn({ masters: unconfirmed }, 'redis replica did not confirm the cycle in time');
      },
    };

    // A source that reads in the cycle's snapshot during the drain serves hydrations itself
    // (serveDuringDrain); otherwise they are read beside the cycle in a newer snapshot.
    // Beside the cycle once it has begun (a first start's or a gap's reset there would delete what
    // was written before it) and until its drain runs in an exported snapshot (then
    // serveDuringDrain answers).
    const side = this.hydrateAlongside(servedBeside, generation, () => !begun || (draining && readRooms !== undefined));
    try {
      await source.cycle([...hydrate, ...verifying], handler);
    } finally {
      await side.stop();
    }
    for (const id of hydrate) this.pendingHydration.delete(id);
    this.metrics.cycles.inc();
    this.metrics.batchSize.observe(events);
    return events;
  }

  /** Runs until `signal` aborts: cycles while there is work, waits for a wake-up otherwise. */
  async run(signal: AbortSignal): Promise<void> {
    const { source, log, store } = this.options;
    const poll = this.options.pollIntervalMs ?? 100;
    const maintainEvery = this.options.maintainIntervalMs ?? 60_000;
    // Narrowed for the type checker: Redis and Cluster both have duplicate(), with unrelated signatures.
    const subscriber = (store.redis as { duplicate(): typeof store.redis }).duplicate();
    subscriber.on('error', () => {}); // reconnects on its own; cycles report Redis errors
    subscriber.on('message', () => {
      this.hydrationAsked = true;
      this.hydrationWake?.();
    });
    await subscriber.subscribe(store.keys.hydrateQueue);

    let failures = 0;
    let started = false;
    // Log maintenance (prune) runs on its own timer beside the cycles, never awaited by them: a
    // prune of a 1M-row burst awaited in this loop stalled commit -> Redis for 25 s.
    let maintaining: Promise<void> | null = null;
    const maintenance = source.maintain
      ? setInterval(() => {
          if (!started || maintaining || !source.maintain) return;
          maintaining = source
            .maintain()
            .catch((err: unknown) => log.warn({ err }, 'log maintenance failed'))
            .finally(() => {
              maintaining = null;
            });
        }, maintainEvery)
      : null;
    maintenance?.unref();
    const name = this.options.bridgeName;
    let ownerLost: string | null = null;
    const renew = name
      ? setInterval(() => {
          store
            .claimPrefix(name, OWNER_TTL_MS)
            .then((other) => {
              ownerLost = other;
            })
            .catch(() => {}); // Redis down: cycles report it
        }, OWNER_TTL_MS / 3)
      : null;
    renew?.unref();
    try {
      while (!signal.aborted) {
        try {
          if (ownerLost !== null) {
            const owner: string = ownerLost;
            ownerLost = null;
            throw new PrefixOwnedError(owner);
          }
          if (!started) {
            if (this.state.lastError !== null) this.metrics.reconnects.inc();
            if (name) {
              const other = await store.claimPrefix(name, OWNER_TTL_MS);
              if (other !== null) throw new PrefixOwnedError(other);
            }
            await source.start(signal);
            started = true;
            this.state.active = true;
          }
          const events = await this.withWatchdog(this.runOnce());
          this.state.lastCycleAt = new Date();
          this.state.lastError = null;
          failures = 0;
          if (events === 0 && this.pendingHydration.size === 0) await this.waitForWork(poll, signal);
        } catch (err) {
          if (signal.aborted) break;
          this.metrics.errors.inc();
          this.state.lastError = (err as Error).message;
          if (err instanceof PrefixOwnedError) {
            // Refused, not retried quickly: the other bridge may run for days.
            this.metrics.prefixConflicts.inc();
            log.error({ owner: err.owner, bridge: name }, err.message);
            if (started) await source.stop().catch(() => {});
            started = false;
            this.state.active = false;
            await sleep(OWNER_TTL_MS / 3, signal);
            continue;
          }
          // Start over after any failure: the source reconnects and re-takes its lock, so a
          // half-broken connection is never trusted again.
          started = false;
          this.state.active = false;
          const delay = backoffDelay(failures++, 100, 5_000); // jitter: no reconnect storm
          log.warn({ err: (err as Error).message, retryInMs: delay }, 'bridge cycle failed');
          await sleep(delay, signal);
        }
      }
    } finally {
      this.dispose();
      if (renew) clearInterval(renew);
      if (maintenance) clearInterval(maintenance);
      this.state.active = false;
      subscriber.disconnect();
      await source.stop().catch((err: unknown) => log.warn({ err }, 'source stop failed'));
      await maintaining; // stop() ends it after its current batch
      // A clean stop hands the prefix back at once (a crash leaves it to expire after OWNER_TTL_MS).
      if (name) await store.releasePrefix(name).catch(() => {});
      log.info('bridge stopped');
    }
  }

  /**
   * Abandons a cycle that made no progress for `cycleTimeoutMs` (a hung connection), however long
   * it has run: a transaction of any size is drained chunk by chunk, each chunk counting as progress.
   */
  private withWatchdog<T>(work: Promise<T>): Promise<T> {
    const ms = this.options.cycleTimeoutMs ?? 120_000;
    this.progressAt = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      const check = () => {
        const idle = Date.now() - this.progressAt;
        if (idle >= ms) {
          this.generation++;
          reject(new UnreadSyncError(ErrorCode.CYCLE_STALLED, `cycle made no progress for ${ms} ms; restarting the source`));
        } else {
          timer = setTimeout(check, ms - idle);
        }
      };
      timer = setTimeout(check, ms);
    });
    work.catch(() => {}); // an abandoned cycle may still fail later; nobody waits for it then
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  private async waitForWork(timeoutMs: number, signal: AbortSignal): Promise<void> {
    const inner = new AbortController();
    const onAbort = () => inner.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const hydration = new Promise<void>((resolve) => {
      this.hydrationWake = resolve;
    });
    await Promise.race([this.options.source.waitForChanges(timeoutMs, inner.signal), hydration]);
    this.hydrationWake = null;
    inner.abort();
    signal.removeEventListener('abort', onAbort);
  }

  /**
   * While a cycle runs longer than SIDE_HYDRATION_AFTER_MS (a large backlog or one huge
   * transaction), hydration requests are answered on another connection in a fresh snapshot
   * instead of waiting for the cycle's end. Safe because of the stamps: the hydration's snapshot
   * is newer than the running cycle's, so Redis refuses that cycle's (older) writes for these
   * users, and later cycles only bring changes after it.
   */
  private hydrateAlongside(served: Set<string>, generation: number, notNow: () => boolean): { stop(): Promise<void> } {
    const { source, log } = this.options;
    if (!source.readHydration) return { stop: async () => {} };
    // Its own Redis connection: on the bridge's connection it would queue behind the cycle's
    // pipelined apply scripts (seconds of them during a large drain).
    const store = (this.sideStore ??= this.options.store.duplicate());
    const read = source.readHydration.bind(source);
    let stopped = false;
    let running: Promise<void> = Promise.resolve();
    const tick = async () => {
      if (notNow()) return;
      await this.collectHydrationRequests(store);
      // The cycle's own hydration list included: its snapshot is older than this one.
      const users = [...this.pendingHydration].filter((u) => !served.has(u)).slice(0, this.hydrateBatchSize);
      if (users.length === 0) return;
      const { snapshot, rooms } = await read(users);
      if (stopped || generation !== this.generation) return;
      // Marked before the write: a reset of the cycle landing around it un-marks them again.
      for (const u of users) served.add(u);
      let written: Map<string, unknown>;
      try {
        written = await store.hydrate(new Map(users.map((u) => [u, rooms.get(u) ?? []])), snapshotStamp(snapshot));
      } catch (err) {
        for (const u of users) served.delete(u);
        throw err;
      }
      this.metrics.hydrations.inc(written.size);
      this.metrics.staleRefused.inc(users.length - written.size);
      for (const u of users) if (served.has(u)) this.pendingHydration.delete(u);
    };
    let busy = false;
    const poll = () => {
      if (busy || stopped) return;
      busy = true;
      running = tick()
        .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'hydration beside the cycle failed'))
        .finally(() => {
          busy = false;
        });
    };
    // Short cycles (nearly all of them) end before this fires: no polling timer for them.
    let timer: NodeJS.Timeout | undefined;
    const delay = setTimeout(() => {
      timer = setInterval(poll, SIDE_HYDRATION_POLL_MS);
      poll();
    }, this.options.sideHydrationAfterMs ?? SIDE_HYDRATION_AFTER_MS);
    return {
      stop: async () => {
        stopped = true;
        clearTimeout(delay);
        clearInterval(timer);
        await running;
      },
    };
  }

  /**
   * Rewind and move detection. Redis keeps the database identity it was built from and the
   * highest snapshot xmax and log id applied; a different identity, a horizon below those (a
   * restore, PITR, failover to a replica that lost commits, a crash that lost an async commit),
   * or a checkpoint with xids from the future (a dump restored on another cluster) means the
   * cache describes another history: forget it, drop the foreign log rows and start from now.
   */
  private async checkDatabase(): Promise<void> {
    const { source, store, log } = this.options;
    if (!source.identity || !source.restartFromNow) return;
    const id = await source.identity();
    const meta = await store.meta();
    const identity = [id.incarnation ?? '-', id.systemId ?? '-', id.timeline ?? '-', id.dbOid].join('/');
    const reasons: string[] = [];
    if (meta.identity !== undefined && meta.identity !== identity)
      reasons.push(`database identity changed (${meta.identity} -> ${identity})`);
    if (meta.xmax !== undefined && BigInt(id.xmax) < BigInt(meta.xmax)) reasons.push(`xid horizon went back (${meta.xmax} -> ${id.xmax})`);
    if (meta.logid !== undefined && BigInt(id.logId) < BigInt(meta.logid)) reasons.push(`log id went back (${meta.logid} -> ${id.logId})`);
    if (id.checkpointXmax !== null && BigInt(id.checkpointXmax) > BigInt(id.xmax)) {
      reasons.push(`checkpoint xmax ${id.checkpointXmax} is ahead of the database (${id.xmax}): xids of another cluster`);
    }
    if (reasons.length > 0) {
      const snapshot = await source.restartFromNow();
      const removed = await store.forgetAll(snapshotStamp(snapshot));
      this.metrics.rewinds.inc();
      this.metrics.resets.inc();
      log.error({ reasons, removed }, 'database rewound or moved: forgot every cached user and restarted from the current snapshot');
    }
    if (reasons.length > 0 || meta.identity !== identity) {
      this.marks = { xmax: BigInt(id.xmax), logId: BigInt(id.logId) };
      await store.setMeta({ identity, xmax: id.xmax, logid: id.logId });
    } else {
      this.marks = { xmax: BigInt(meta.xmax ?? '0'), logId: BigInt(meta.logid ?? '0') };
    }
  }

  /**
   * Partitions added or removed by DDL when no superuser installed the event trigger: the source
   * installs their capture and logs a reset (read by this or the next cycle) when rows came or went.
   */
  private async checkPartitions(): Promise<void> {
    const { source, log } = this.options;
    if (!source.syncPartitions || this.noPartitionSync) return;
    const done = await source.syncPartitions().catch((err: unknown) => {
      // A database migrated before sync_partitions() existed: say so once, keep running.
      if (errorCode(err) !== SqlState.UNDEFINED_FUNCTION) throw err;
      this.noPartitionSync = true;
      log.warn('unread_sync.sync_partitions() is missing: run `unread-sync migrate up` so partitions added later are captured');
      return { installed: 0, reset: false };
    });
    if (done.installed > 0 || done.reset) {
      this.metrics.partitionSyncs.inc();
      log.warn(
        done,
        done.reset
          ? 'chat_rooms partitions changed (a filled table attached or a partition removed): reset logged, every cached user reloads'
          : 'capture installed on new chat_rooms partitions',
      );
    }
  }

  /**
   * Disabled capture triggers (ALTER TABLE ... DISABLE TRIGGER) mean writes to chat_rooms are no
   * longer logged: badges go stale without any error. Reported on /readyz and in a metric, and
   * logged at error level once per episode.
   */
  private async checkCapture(): Promise<void> {
    const { source, log } = this.options;
    if (!source.captureProblems) return;
    const problems = await source.captureProblems();
    this.metrics.captureDisabled.set(problems.length);
    const problem = problems.length > 0 ? `capture triggers not firing: ${problems.join(', ')}` : null;
    if (problem && this.state.captureProblem === null) {
      this.metrics.captureEpisodes.inc();
      log.error(
        { triggers: problems },
        `${problem}; some changes to chat_rooms are not captured (ALTER TABLE chat_rooms ENABLE ALWAYS TRIGGER <name>; the bridge then resets the cache by itself)`,
      );
    }
    // The episode is recorded in the database; its end logs a reset through the log (ordered
    // after every write the log missed), so users reload and the verifier is not the mechanism.
    if (source.recordCapture && (await source.recordCapture(problem === null))) {
      log.warn('capture triggers fire again; writes made while they did not are not in the log: reset logged, every cached user reloads');
    }
    this.state.captureProblem = problem;
  }

  /** Records in Redis how far it reflects the database (before the source may advance). */
  private async raiseMarks(stamp: SnapshotStamp | null, maxId: bigint): Promise<void> {
    const xmax = stamp ? BigInt(stamp.xmax) : 0n;
    if (xmax <= this.marks.xmax && maxId <= this.marks.logId) return;
    this.marks = { xmax: xmax > this.marks.xmax ? xmax : this.marks.xmax, logId: maxId > this.marks.logId ? maxId : this.marks.logId };
    await this.options.store.setMeta({ xmax: String(this.marks.xmax), logid: String(this.marks.logId) });
  }

  private async verificationSample(): Promise<string[]> {
    this.recheckRound = this.recheck.length > 0;
    if (this.recheckRound) return this.recheck.splice(0);
    const every = this.options.verifyIntervalMs ?? 0;
    if (every <= 0 || Date.now() < this.verifyDueAt) return [];
    this.verifyDueAt = Date.now() + every;
    return this.options.store.nextUsers(this.verifyPosition, this.options.verifySampleSize ?? 50);
  }

  /** Compares cached users with the snapshot just applied; repairs and reports any difference. */
  private async verifyAgainst(users: string[], truth: Map<string, HydratedRoom[]>, stamp: SnapshotStamp | null): Promise<void> {
    const { store, log } = this.options;
    const cached = await Promise.all(users.map((u) => store.read(u)));
    const repairs = new Map<string, HydratedRoom[]>();
    const found: Array<{ userId: string; cachedTotal: number; cached: Record<string, number> }> = [];
    users.forEach((userId, i) => {
      const c = cached[i];
      if (!c) return; // evicted meanwhile: unknown, nothing to compare
      const rooms = truth.get(userId) ?? [];
      this.metrics.verifiedUsers.inc();
      if (!matchesTruth(c, rooms)) {
        repairs.set(userId, rooms);
        found.push({ userId, cachedTotal: c.total, cached: c.rooms });
      }
    });
    if (repairs.size === 0) return;
    // Capture is off: the drift is real and expected, and the reset logged when capture fires
    // again covers every user; a repair now would be overwritten by the next missed write anyway.
    if (this.state.captureProblem !== null) return;
    // A rewound or moved database first shows up as drift: check its identity at the start of the
    // next cycle and compare these users again then, so a rewind is handled by its reset and the
    // verifier repairs only what nothing else explains.
    if (!this.recheckRound && this.options.source.identity) {
      this.recheck = [...repairs.keys()];
      this.identityDueAt = 0;
      return;
    }
    // Stamped like a hydration: a difference because another bridge already wrote newer state is
    // not drift, and the newer state stays.
    const written = await store.hydrate(repairs, stamp);
    this.metrics.staleRefused.inc(repairs.size - written.size);
    for (const f of found) {
      if (!written.has(f.userId)) continue;
      const rooms = repairs.get(f.userId) ?? [];
      const database = Object.fromEntries(rooms.map((r) => [r.roomId, r.unread]));
      const databaseTotal = rooms.reduce((a, r) => a + r.unread, 0);
      log.error({ ...f, databaseTotal, database }, 'drift found and repaired');
    }
    this.metrics.driftRepairs.inc(written.size);
  }

  /** Most users one cycle hydrates: more when the source reads them in parallel (a rebuild). */
  private hydratePerCycle(): number {
    return Math.max(this.hydrateBatchSize, this.options.source.maxHydratePerCycle ?? 0);
  }

  private async collectHydrationRequests(store = this.options.store): Promise<void> {
    const room = this.hydratePerCycle() * 2 - this.pendingHydration.size;
    if (room <= 0) return;
    const ids = await store.takeHydrationRequests(room);
    for (const id of ids) {
      try {
        this.pendingHydration.add(parseUserId(id));
      } catch (err) {
        await this.deadLetter((err as Error).message, { hydrate: id });
      }
    }
  }

  private async applyGroups(groups: Map<string, RoomChange[]>, stamp: SnapshotStamp | null): Promise<void> {
    const results = await this.options.store.apply(groups, stamp);
    for (const r of results) {
      if (r.applied === ApplyStatus.UNKNOWN_USER) {
        this.metrics.changesUnknownUser.inc(groups.get(r.userId)?.length ?? 0);
      } else {
        this.metrics.changesApplied.inc(r.applied);
        this.metrics.changesSkipped.inc(r.skipped);
      }
    }
  }

  private observe(event: SetEvent): void {
    const age = ageMs(event);
    if (age !== null) this.metrics.lag.observe(age / 1000);
    if (event.negative) {
      this.metrics.negativeCounts.inc();
      this.options.log.warn({ userId: event.user_id, roomId: event.room_id }, 'negative unread count in chat_rooms, counted as 0');
    }
  }

  private async reset(reason: string, stamp: SnapshotStamp | null): Promise<void> {
    // A SCAN of the whole keyspace can take seconds on a big shared Redis: each page is progress.
    const removed = await this.options.store.forgetAll(stamp, () => {
      this.progressAt = Date.now();
    });
    this.metrics.resets.inc();
    this.options.log.warn({ reason, removed }, 'forgot every cached user');
  }

  private async deadLetter(reason: string, event: unknown): Promise<void> {
    this.metrics.deadLetters.inc();
    this.options.log.warn({ reason }, 'malformed event dead-lettered');
    await this.options.store.deadLetter({ reason, event, source: this.options.source.name });
  }
}
