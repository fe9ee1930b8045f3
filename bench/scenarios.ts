import postgres from 'postgres';
import { Redis } from 'ioredis';
import { queries, type Sql } from '../src/db.js';
import { rebuildAll } from '../src/commands/rebuild.js';
import { UnreadReader } from '../src/read/reader.js';
import { parseTotalsMessage } from '../src/store/store.js';
import { SeedCurrent } from './baselines/seed-current.js';
import { SeedUnreadCountManager } from './baselines/seed-redis.js';
import { counter, type BenchContext } from './context.js';
import { closedLoop, now, rng, Samples, sleep, summarize, type LatencySummary } from './lib.js';
import type { SocketProbe } from './socket-probe.js';

const pool = (url: string, max: number) => postgres(url, { max, onnotice: () => {}, types: {} }) as unknown as Sql;

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (i < items.length) await fn(items[i++] as T);
    }),
  );
}

// ---------------------------------------------------------------- 5. cold rebuild

export interface RebuildResult {
  cliPath: { users: number; seconds: number; usersPerSec: number; hydrationsDone: number; timedOut: boolean };
  bulkEnqueue: { users: number; seconds: number; usersPerSec: number; hydrationsDone: number };
  cachedAfter: number;
}

/**
 * Rebuild through the bridge's hydration path. (a) exactly what `unread-sync rebuild` does
 * (src/cli.ts): forgetAll, then pages of usersWithUnread -> requestHydration -> reader.getTotals.
 * (b) every user (also those with nothing unread, needed so later scenarios apply changes
 * instead of skipping unknown users) enqueued at once, waiting on the bridge's hydration counter.
 */
export async function coldRebuild(ctx: BenchContext, _budgetMs: number, cliPath: boolean): Promise<RebuildResult> {
  const bridge = ctx.bridge;
  if (!bridge) throw new Error('bridge not running');
  const config = ctx.config();
  const reader = new UnreadReader(ctx.store, { hydrateTimeoutMs: 60_000 });

  let h0 = await counter(bridge.bridge.metrics.hydrations);
  let t0 = now();
  let count = 0;
  const timedOut = false;
  if (cliPath) {
    // Exactly what `unread-sync rebuild` runs.
    const report = await rebuildAll({
      sql: ctx.sql,
      store: ctx.store,
      reader,
      pageSize: config.hydrateBatchSize * 4,
      bridgeName: config.bridgeName,
      bridgeWaitMs: 30_000,
    });
    count = report.users;
  }
  const cliSeconds = (now() - t0) / 1000;
  const cliHydrations = (await counter(bridge.bridge.metrics.hydrations)) - h0;
  // Let stray duplicate requests (see report) finish before the next phase.
  await sleep(200);
  while ((await ctx.redis.llen(ctx.store.keys.hydrateQueue)) > 0) await sleep(20);
  await sleep(200);

  await ctx.store.forgetAll();
  h0 = await counter(bridge.bridge.metrics.hydrations);
  t0 = now();
  for (let i = 0; i < ctx.users.length; i += 10_000) await ctx.store.requestHydration(ctx.users.slice(i, i + 10_000));
  while ((await counter(bridge.bridge.metrics.hydrations)) - h0 < ctx.users.length) await sleep(5);
  const bulkSeconds = (now() - t0) / 1000;
  const bulkHydrations = (await counter(bridge.bridge.metrics.hydrations)) - h0;

  let cached = 0;
  for (let i = 0; i < ctx.users.length; i += 5_000) {
    const got = await Promise.all(ctx.users.slice(i, i + 5_000).map((u) => ctx.redis.exists(ctx.store.keys.user(u))));
    cached += got.reduce((a, b) => a + b, 0);
  }
  return {
    cliPath: {
      users: count,
      seconds: cliSeconds,
      usersPerSec: cliPath ? count / cliSeconds : NaN,
      hydrationsDone: cliHydrations,
      timedOut,
    },
    bulkEnqueue: {
      users: ctx.users.length,
      seconds: bulkSeconds,
      usersPerSec: ctx.users.length / bulkSeconds,
      hydrationsDone: bulkHydrations,
    },
    cachedAfter: cached,
  };
}

// ---------------------------------------------------------------- 1. badge read

export interface ReadRun {
  system: string;
  concurrency: number;
  latency: LatencySummary;
  opsPerSec: number;
  ops: number;
  errors: number;
  dbXacts: number | null;
  chatRoomScans: number | null;
}

async function dbCounters(sql: Sql, db: string): Promise<{ xact: number; scans: number }> {
  // Flush this backend's own pending stats first, so back-to-back reads are exact.
  await sql`select pg_stat_force_next_flush()`;
  const [d] = await sql<{ xact: string }[]>`select xact_commit::text as xact from pg_stat_database where datname = ${db}`;
  const [t] = await sql<{ scans: string }[]>`
    select (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::text as scans
      from pg_stat_user_tables where relname = 'chat_rooms' and schemaname = 'public'`;
  return { xact: Number(d?.xact ?? 0), scans: Number(t?.scans ?? 0) };
}

export async function badgeRead(ctx: BenchContext, sample: string[]): Promise<{ runs: ReadRun[]; seedLoaded: number }> {
  const dbName = new URL(ctx.ds.url).pathname.slice(1);
  const stats = pool(ctx.ds.url, 1);
  const r = rng(1);
  const pick = () => sample[Math.floor(r() * sample.length)] as string;
  const runs: ReadRun[] = [];
  const reader = new UnreadReader(ctx.store);
  const dur = ctx.opts.durationMs;

  // Seed layout for the same users, loaded the seed's way (syncFromDatabase), on a pool that is
  // closed before measuring: a closing backend flushes its statistics at once.
  const seedRedis = new Redis(ctx.redisUrl, { enableAutoPipelining: true });
  const seed = new SeedUnreadCountManager(seedRedis, ctx.prefix);
  const loader = pool(ctx.ds.url, 16);
  await mapLimit(sample, 32, (u) => seed.syncFromDatabase(u, loader));
  await loader.end();

  // Ours first, both concurrencies, inside one window. Idle backends flush pending statistics
  // within 10 s (PGSTAT_IDLE_INTERVAL), so the window opens and closes 11 s after any other
  // database work; the bridge is stopped by the caller. Every transaction counted is a leak.
  // An idle window of the same shape (counter read, 11 s, counter read) calibrates what the
  // counter reads themselves add; the difference to our window is what the reader sent.
  await sleep(11_000);
  const c0 = await dbCounters(stats, dbName);
  await sleep(11_000);
  const c1 = await dbCounters(stats, dbName);
  const ownXacts = c1.xact - c0.xact;
  const ours: Array<Awaited<ReturnType<typeof closedLoop>> & { concurrency: number }> = [];
  // Each system gets the same short unmeasured warm-up (JIT, connection buffers) before each run.
  const warm = (c: number, op: () => Promise<unknown>) => closedLoop(c, 500, op);
  for (const concurrency of [1, 32]) {
    await warm(concurrency, () => reader.getTotals(pick()));
    ours.push({ concurrency, ...(await closedLoop(concurrency, dur, () => reader.getTotals(pick()))) });
  }
  await sleep(11_000);
  const c2 = await dbCounters(stats, dbName);
  const oursXacts = c2.xact - c1.xact - ownXacts;
  const oursScans = c2.scans - c1.scans;
  for (const o of ours) runs.push({ system: 'ours (UnreadReader.getTotals)', ...o, dbXacts: oursXacts, chatRoomScans: oursScans });

  for (const concurrency of [1, 32]) {
    await warm(concurrency, () => seed.readTotal(pick(), ctx.sql));
    const sr = await closedLoop(concurrency, dur, () => seed.readTotal(pick(), ctx.sql));
    runs.push({ system: 'seed-redis (HGET total)', concurrency, ...sr, dbXacts: null, chatRoomScans: null });
  }
  for (const concurrency of [1, 32]) {
    const seedSql = pool(ctx.ds.url, concurrency);
    const current = new SeedCurrent(seedSql);
    await seedSql`select 1`;
    await warm(concurrency, () => current.sendTotalUnreadCount(pick()));
    const b0 = await dbCounters(stats, dbName);
    const sc = await closedLoop(concurrency, dur, () => current.sendTotalUnreadCount(pick()));
    await seedSql.end();
    const b1 = await dbCounters(stats, dbName);
    runs.push({
      system: 'seed-current (DB query)',
      concurrency,
      ...sc,
      dbXacts: b1.xact - b0.xact - ownXacts,
      chatRoomScans: b1.scans - b0.scans,
    });
  }
  await stats.end();
  seedRedis.disconnect();
  return { runs, seedLoaded: sample.length };
}

// ---------------------------------------------------------------- 6. memory

export interface MemoryResult {
  sampledUsers: number;
  usersWithUnread: number;
  unreadPairs: number;
  ours: { bytes: number; perUser: number; perUserWithUnread: number; perPair: number; encodings: Record<string, number> };
  seed: { bytes: number; perUser: number; perUserWithUnread: number; perPair: number; encodings: Record<string, number> };
}

export async function memory(ctx: BenchContext, sample: string[]): Promise<MemoryResult> {
  const users = sample.slice(0, 5_000);
  const seedKey = (u: string) => `${ctx.prefix}user:${u}:unread_counts`;
  let ours = 0;
  let seed = 0;
  let pairs = 0;
  let withUnread = 0;
  const oursEnc: Record<string, number> = {};
  const seedEnc: Record<string, number> = {};
  const usage = async (key: string) => Number((await ctx.redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
  await mapLimit(users, 64, async (u) => {
    const [a, d, s, n, ea, es] = await Promise.all([
      usage(ctx.store.keys.user(u)),
      usage(ctx.store.keys.tombstones(u)),
      usage(seedKey(u)),
      ctx.redis.hget(ctx.store.keys.user(u), 'n'),
      ctx.redis.object('ENCODING', ctx.store.keys.user(u)),
      ctx.redis.object('ENCODING', seedKey(u)),
    ]);
    ours += a + d;
    seed += s;
    const rooms = Number(n ?? 0);
    pairs += rooms;
    if (rooms > 0) withUnread++;
    oursEnc[String(ea)] = (oursEnc[String(ea)] ?? 0) + 1;
    seedEnc[String(es)] = (seedEnc[String(es)] ?? 0) + 1;
  });
  const side = (bytes: number, enc: Record<string, number>) => ({
    bytes,
    perUser: bytes / users.length,
    perUserWithUnread: bytes / Math.max(1, withUnread),
    perPair: bytes / Math.max(1, pairs),
    encodings: enc,
  });
  return {
    sampledUsers: users.length,
    usersWithUnread: withUnread,
    unreadPairs: pairs,
    ours: side(ours, oursEnc),
    seed: side(seed, seedEnc),
  };
}

// ---------------------------------------------------------------- 2. write -> badge

export interface RateRun {
  targetRate: number;
  achievedRate: number;
  commits: number;
  delivered: number;
  lost: number;
  commit: LatencySummary;
  commitToRedis: LatencySummary;
  sendToRedis: LatencySummary;
  commitToSocket: LatencySummary | null;
}

interface Pending {
  expected: number;
  tSend: number;
  tAck: number;
  tMsg: number;
  tSock: number;
}

/** Individual users with one active room each: every UPDATE moves exactly that user's total by 1. */
async function latencyTargets(ctx: BenchContext, n: number): Promise<Array<{ user: string; room: string }>> {
  const rows = await ctx.sql<{ user_id: string; id: string }[]>`
    select distinct on (r.user_id) r.user_id::text as user_id, r.id::text as id
      from chat_rooms r join bench_users u on u.id = r.user_id and not u.company
     where r.is_active and r.user_id is distinct from r.company_id
     order by r.user_id, r.id limit ${n}`;
  return rows.map((r) => ({ user: r.user_id, room: r.id }));
}

export async function writeToBadge(
  ctx: BenchContext,
  rates: number[],
  socket: SocketProbe | null,
): Promise<{ runs: RateRun[]; users: number; maxRateP99Under50: number | null }> {
  const targets = await latencyTargets(ctx, 500);
  const sub = new Redis(ctx.redisUrl);
  const writer = pool(ctx.ds.url, 16);
  await writer`select 1`;
  const queues = new Map<string, Pending[]>();
  const channelUser = new Map<string, string>();
  for (const t of targets) channelUser.set(ctx.store.keys.channel(t.user), t.user);
  let commitToRedis = new Samples();
  let sendToRedis = new Samples();
  let commitLat = new Samples();
  let socketLat = new Samples();
  let delivered = 0;
  let outstanding = 0;
  // Each timestamp is set once, so each latency is recorded once, whichever event comes last.
  const redisDone = (p: Pending) => {
    commitToRedis.add(Math.max(0, p.tMsg - p.tAck));
    sendToRedis.add(p.tMsg - p.tSend);
    delivered++;
  };
  const socketDone = (p: Pending) => socketLat.add(Math.max(0, p.tSock - p.tAck));
  const lastTotal = new Map<string, number>();
  sub.on('smessage', (channel: string, message: string) => {
    const t = now();
    const user = channelUser.get(channel);
    const totals = parseTotalsMessage(message);
    if (!user || !totals) return;
    lastTotal.set(user, totals.total);
    for (const p of queues.get(user) ?? []) {
      if (p.tMsg === 0 && p.expected <= totals.total) {
        p.tMsg = t;
        if (p.tAck > 0) redisDone(p);
        outstanding--;
      }
    }
    const q = queues.get(user);
    if (q) while (q.length && q[0]!.tMsg > 0 && (!socket || q[0]!.tSock > 0) && q[0]!.tAck > 0) q.shift();
  });
  const channels = targets.map((t) => ctx.store.keys.channel(t.user));
  for (let i = 0; i < channels.length; i += 500) await sub.ssubscribe(...channels.slice(i, i + 500));
  if (socket) {
    await socket.connect(
      targets.map((t) => t.user),
      (user, total) => {
        const t = now();
        for (const p of queues.get(user) ?? []) {
          if (p.tSock === 0 && p.expected <= total) {
            p.tSock = t;
            if (p.tAck > 0) socketDone(p);
          }
        }
      },
    );
  }

  const runs: RateRun[] = [];
  let maxOk: number | null = null;
  for (const rate of rates) {
    await ctx.waitForBridge();
    await sleep(100);
    const base = new Map<string, number>();
    await Promise.all(
      targets.map(async (t) => {
        const totals = await ctx.store.readTotals(t.user);
        base.set(t.user, totals?.total ?? 0);
      }),
    );
    const issued = new Map<string, number>();
    queues.clear();
    commitToRedis = new Samples();
    sendToRedis = new Samples();
    commitLat = new Samples();
    socketLat = new Samples();
    delivered = 0;
    outstanding = 0;
    let commits = 0;
    let sent = 0;
    const start = now();
    const end = start + ctx.opts.durationMs;
    let k = 0;
    // Open loop: commits are issued on schedule whatever the latency, so queueing shows up.
    while (now() < end) {
      const due = Math.floor(((now() - start) / 1000) * rate);
      while (sent < due) {
        const t = targets[k++ % targets.length]!;
        const n = (issued.get(t.user) ?? 0) + 1;
        issued.set(t.user, n);
        const p: Pending = { expected: (base.get(t.user) ?? 0) + n, tSend: now(), tAck: 0, tMsg: 0, tSock: 0 };
        let q = queues.get(t.user);
        if (!q) queues.set(t.user, (q = []));
        q.push(p);
        outstanding++;
        sent++;
        writer`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${t.room}`.then(
          () => {
            p.tAck = now();
            commitLat.add(p.tAck - p.tSend);
            commits++;
            if (p.tMsg > 0) redisDone(p);
            if (p.tSock > 0) socketDone(p);
          },
          () => {},
        );
      }
      await sleep(1);
    }
    const drainDeadline = now() + 10_000;
    while ((outstanding > 0 || commits < sent) && now() < drainDeadline) await sleep(5);
    if (socket) {
      const sockDeadline = now() + 3_000;
      while (socketLat.count < sent && now() < sockDeadline) await sleep(5);
    }
    const run: RateRun = {
      targetRate: rate,
      // Commits acknowledged over the whole run, including the tail after the send window.
      achievedRate: commits / ((now() - start) / 1000),
      commits,
      delivered,
      lost: sent - delivered,
      commit: summarize(commitLat),
      commitToRedis: summarize(commitToRedis),
      sendToRedis: summarize(sendToRedis),
      commitToSocket: socket ? summarize(socketLat) : null,
    };
    // Sustainable: the scheduler issued >= 95% of the target in the window, every commit was
    // acknowledged and every change reached Redis.
    const keptUp = run.achievedRate >= rate * 0.95 && run.lost === 0;
    if (keptUp && run.commitToRedis.p99 < 50) maxOk = Math.max(maxOk ?? 0, rate);
    runs.push(run);
    ctx.log.info({ rate, p50: run.commitToRedis.p50, p99: run.commitToRedis.p99 }, 'rate done');
    process.stderr.write(
      `  rate ${rate}/s: achieved ${run.achievedRate.toFixed(0)}/s, commit->redis p50 ${run.commitToRedis.p50.toFixed(2)} p99 ${run.commitToRedis.p99.toFixed(2)} ms, lost ${run.lost}\n`,
    );
    if (!keptUp || run.commitToRedis.p99 > 1_000) break;
  }
  await socket?.close();
  sub.disconnect();
  await writer.end();
  return { runs, users: targets.length, maxRateP99Under50: maxOk };
}

// ---------------------------------------------------------------- 3. write overhead

export interface OverheadPhase {
  label: string;
  opsPerSec: number;
  latency: LatencySummary;
}

export interface OverheadResult {
  phases: OverheadPhase[];
  onMean: number;
  offMean: number;
  ratio: number;
  /** Diagnostic only: capture trigger with its pg_notify removed, in the bench database. */
  noNotify: OverheadPhase | null;
  noNotifyRatio: number | null;
}

/**
 * UPDATE throughput with the capture trigger on and off, alternating on/off/on/off so drift in
 * the machine (checkpoints, autovacuum) hits both sides. Then, as a diagnostic, the same with the
 * trigger's pg_notify taken out (bench database only, restored afterwards): NOTIFY takes a
 * database-wide lock from pre-commit to the end of commit, which serializes committing writers.
 */
export async function writeOverhead(ctx: BenchContext, diagnostic: boolean): Promise<OverheadResult> {
  const rooms = (
    await ctx.sql<{ id: string }[]>`select id::text as id from chat_rooms where is_active order by md5(id::text) limit 20000`
  ).map((r) => r.id);
  const writer = pool(ctx.ds.url, 8);
  await writer`select 1`;
  const r = rng(3);
  const touched = new Set<string>();
  const phase = async (label: string, track: boolean): Promise<OverheadPhase> => {
    // Every phase starts right after a checkpoint, so full-page writes weigh the same on each.
    await ctx.sql.unsafe('checkpoint');
    const res = await closedLoop(8, ctx.opts.durationMs, async () => {
      const id = rooms[Math.floor(r() * rooms.length)] as string;
      if (track) touched.add(id);
      await writer`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
    });
    process.stderr.write(`   ${label}: ${res.opsPerSec.toFixed(0)} updates/s\n`);
    return { label, opsPerSec: res.opsPerSec, latency: res.latency };
  };
  // The single-row UPDATE path runs through unread_sync_capture_update (row trigger, no column
  // list, WHEN filter; migration 1764000000003); both row triggers go off together and come back
  // ENABLE ALWAYS (a plain ENABLE would stop capture under session_replication_role = replica).
  const capture = ['unread_sync_capture', 'unread_sync_capture_update'];
  const off = async (label: string) => {
    for (const t of capture) await ctx.sql.unsafe(`alter table chat_rooms disable trigger ${t}`);
    try {
      return await phase(label, true);
    } finally {
      for (const t of capture) await ctx.sql.unsafe(`alter table chat_rooms enable always trigger ${t}`);
    }
  };
  const phases: OverheadPhase[] = [];
  phases.push(await phase('triggers on #1', false));
  phases.push(await off('triggers off #1'));
  phases.push(await phase('triggers on #2', false));
  phases.push(await off('triggers off #2'));
  // Rows changed while capture was off are touched once more with capture on: the log carries
  // absolute values, so this one change puts the mirror right again.
  await ctx.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = any(${[...touched]}::uuid[])`;

  let noNotify: OverheadPhase | null = null;
  if (diagnostic) {
    const [fn] = await ctx.sql<{ def: string }[]>`select pg_get_functiondef('unread_sync.capture_change()'::regprocedure) as def`;
    const original = fn?.def ?? '';
    const stripped = original.replace(/PERFORM pg_notify\('unread_sync', ''\);/, 'NULL;');
    if (stripped !== original) {
      await ctx.sql.unsafe(stripped);
      try {
        noNotify = await phase('diagnostic: triggers on, pg_notify removed', false);
      } finally {
        await ctx.sql.unsafe(original);
      }
    }
  }
  await writer.end();
  const mean = (xs: OverheadPhase[]) => xs.reduce((a, x) => a + x.opsPerSec, 0) / xs.length;
  const onMean = mean(phases.filter((p) => p.label.includes(' on ')));
  const offMean = mean(phases.filter((p) => p.label.includes(' off ')));
  return {
    phases,
    onMean,
    offMean,
    ratio: onMean / offMean,
    noNotify,
    noNotifyRatio: noNotify ? noNotify.opsPerSec / offMean : null,
  };
}

// ---------------------------------------------------------------- 4. bridge drain

export interface DrainResult {
  changes: number;
  generateSeconds: number;
  drainSeconds: number;
  applySeconds: number;
  changesPerSec: number;
  applied: number;
  unknownUser: number;
  skipped: number;
  cycles: number;
  /** Failed cycles while draining (connections killed from outside): the drain replayed. */
  bridgeErrors: number;
}

export async function drain(ctx: BenchContext, n: number): Promise<DrainResult> {
  await ctx.waitForBridge();
  await ctx.stopBridge();
  const t0 = now();
  // Rooms of cached individual users (every user was hydrated), one change per row update.
  await ctx.sql.unsafe(`drop table if exists bench_drain_rooms;
    create table bench_drain_rooms as
      select row_number() over () as seq, r.id from chat_rooms r
       where r.is_active and r.user_id is not null limit ${Math.min(n, 250_000)}`);
  const [{ m } = { m: 0 }] = await ctx.sql<{ m: number }[]>`select count(*)::int as m from bench_drain_rooms`;
  let made = 0;
  const batch = 50_000;
  while (made < n) {
    let from = 1;
    while (from <= m && made < n) {
      const to = Math.min(m, from + batch - 1, from + (n - made) - 1);
      const res = await ctx.sql`
        update chat_rooms c set user_unread_count = c.user_unread_count + 1
          from bench_drain_rooms d where d.seq between ${from} and ${to} and c.id = d.id`;
      made += res.count;
      from = to + 1;
    }
  }
  const generateSeconds = (now() - t0) / 1000;
  const target = await queries.currentSnapshot(ctx.sql);
  process.stderr.write(`  backlog of ${made} changes committed in ${generateSeconds.toFixed(1)} s; starting bridge\n`);

  const t1 = now();
  // Checkpoint after every cycle here, so "caught up" is seen the moment it happens.
  const b = ctx.startBridge({ UNREAD_CHECKPOINT_INTERVAL_MS: '0' });
  const m0 = b.bridge.metrics;
  let applyDone = 0;
  const watch = (async () => {
    while (!applyDone) {
      const seen = (await counter(m0.changesApplied)) + (await counter(m0.changesUnknownUser)) + (await counter(m0.changesSkipped));
      if (seen >= made) applyDone = now();
      else await sleep(5);
    }
  })();
  await ctx.waitForBridge(900_000, target);
  const drainSeconds = (now() - t1) / 1000;
  if (!applyDone) applyDone = now();
  await watch;
  await ctx.sql.unsafe('drop table if exists bench_drain_rooms');
  return {
    changes: made,
    generateSeconds,
    drainSeconds,
    applySeconds: (applyDone - t1) / 1000,
    changesPerSec: made / drainSeconds,
    applied: await counter(m0.changesApplied),
    unknownUser: await counter(m0.changesUnknownUser),
    skipped: await counter(m0.changesSkipped),
    cycles: await counter(m0.cycles),
    bridgeErrors: await counter(m0.errors),
  };
}

// ---------------------------------------------------------------- 7. drift

export interface DriftResult {
  /** Users per round; drift counts are user-rounds. */
  users: number;
  rounds: number;
  writers: number;
  ops: number;
  seedRedis: { driftedTotal: number; driftedRooms: number };
  ours: { drifted: number; notCached: number };
}

/**
 * 16 writers hit a few users. Each op is what the seed app does: write the database, then tell
 * the UnreadCountManager (increment / decrement / reset). The bridge mirrors the same database
 * writes through the triggers, so both layouts are compared with one database truth.
 */
export async function driftUnderConcurrency(ctx: BenchContext, opsPerWriter: number, rounds: number): Promise<DriftResult> {
  const rows = await ctx.sql<{ user_id: string; id: string }[]>`
    with u as (
      select r.user_id from chat_rooms r join bench_users b on b.id = r.user_id and not b.company
       where r.is_active and r.user_id is distinct from r.company_id
       group by r.user_id having count(*) between 3 and 20 order by md5(r.user_id::text) limit 10)
    select r.user_id::text as user_id, r.id::text as id from chat_rooms r join u using (user_id)
     where r.is_active and r.user_id is distinct from r.company_id`;
  const rooms = rows.map((r) => ({ user: r.user_id, room: r.id }));
  const users = [...new Set(rooms.map((r) => r.user))];
  const writers = 16;
  const clients = Array.from({ length: writers }, () => new Redis(ctx.redisUrl));
  const managers = clients.map((c) => new SeedUnreadCountManager(c, ctx.prefix));
  const db = pool(ctx.ds.url, writers);
  let seedTotal = 0;
  let seedRooms = 0;
  let oursDrift = 0;
  let notCached = 0;
  // Several rounds, each compared afterwards: a reset heals a room in the seed, so one final
  // comparison would see only the drift made since the last reset of each room.
  for (let round = 0; round < rounds; round++) {
    await Promise.all(users.map((u) => managers[0]!.redis.del(managers[0]!.key(u))));
    await Promise.all(users.map((u) => managers[0]!.syncFromDatabase(u, ctx.sql)));
    await ctx.waitForBridge();
    await Promise.all(
      managers.map(async (mgr, w) => {
        const r = rng(100 + w + 1000 * round);
        for (let i = 0; i < opsPerWriter; i++) {
          const { user, room } = rooms[Math.floor(r() * rooms.length)]!;
          const x = r();
          if (x < 0.6) {
            await db`update chat_rooms set user_unread_count = coalesce(user_unread_count, 0) + 1 where id = ${room}`;
            await mgr.incrementUnreadCount(user, room);
          } else if (x < 0.8) {
            const count = 1 + Math.floor(r() * 3);
            await db`update chat_rooms set user_unread_count = greatest(coalesce(user_unread_count, 0) - ${count}, 0) where id = ${room}`;
            await mgr.decrementUnreadCount(user, room, count);
          } else {
            await db`update chat_rooms set user_unread_count = 0 where id = ${room}`;
            await mgr.resetRoomUnreadCount(user, room);
          }
        }
      }),
    );
    await ctx.waitForBridge();

    const truth = await ctx.sql<{ user_id: string; room_id: string; unread: number }[]>`
      select user_id::text as user_id, room_id::text as room_id, unread from unread_sync.unread_truth
       where user_id = any(${users}::uuid[])`;
    const expected = new Map<string, Map<string, number>>(users.map((u) => [u, new Map()]));
    for (const t of truth) expected.get(t.user_id)?.set(t.room_id, t.unread);
    for (const u of users) {
      const exp = expected.get(u)!;
      const sum = [...exp.values()].reduce((a, b) => a + b, 0);
      const hash = await ctx.redis.hgetall(managers[0]!.key(u));
      if (Number(hash.total ?? 0) !== sum) seedTotal++;
      const seedRoomsMap = Object.entries(hash).filter(([k, v]) => k !== 'total' && Number(v) > 0);
      if (seedRoomsMap.length !== exp.size || seedRoomsMap.some(([k, v]) => exp.get(k) !== Number(v))) seedRooms++;
      const ours = await ctx.store.read(u);
      if (!ours) {
        notCached++;
        continue;
      }
      const same =
        ours.total === sum &&
        ours.unreadRooms === exp.size &&
        Object.keys(ours.rooms).length === exp.size &&
        Object.entries(ours.rooms).every(([k, v]) => exp.get(k) === v);
      if (!same) oursDrift++;
    }
  }
  for (const c of clients) c.disconnect();
  await db.end();
  return {
    users: users.length,
    rounds,
    writers,
    ops: writers * opsPerWriter * rounds,
    seedRedis: { driftedTotal: seedTotal, driftedRooms: seedRooms },
    ours: { drifted: oursDrift, notCached },
  };
}
