/**
 * unread-sync benchmark: `npm run bench -- [--quick] [--scale f|users] [--duration s] [--out f] [--svg f]
 * [--readme README.md] [--db name] [--prefix p:]`.
 * Builds its own data set in database unread_bench (or --db / BENCH_DB), uses Redis keys under
 * "bench:" (or --prefix / BENCH_PREFIX) only.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, relative, sep } from 'node:path';
import { createLogger } from '../src/log.js';
import { prepareDataset, allUserIds } from './dataset.js';
import { BenchContext, type BenchOptions } from './context.js';
import { fmt, markdownTable, rng, type LatencySummary } from './lib.js';
import {
  badgeRead,
  coldRebuild,
  drain,
  driftUnderConcurrency,
  memory,
  writeOverhead,
  writeToBadge,
  type DrainResult,
  type DriftResult,
  type MemoryResult,
  type OverheadResult,
  type RateRun,
  type ReadRun,
  type RebuildResult,
} from './scenarios.js';
import { installPeers, TriggerSwitch, uninstallPeers } from './baselines/peers.js';
import { issue13Targets, rewriteReadmeBlock, sideBySide, targetsTable, type Target } from './issue13-report.js';
import { overheadLive, type OverheadLiveResult } from './overhead-live.js';
import { pushLatency, type PushLatencyResult } from './push-latency.js';
import { loadSocketProbe } from './socket-probe.js';
import { latencySvg, type ChartPanel } from './svg.js';

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

function parseArgs(argv: string[]): BenchOptions {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes('--quick');
  const scaleArg = Number(get('scale') ?? (quick ? 0.1 : 1));
  if (!(scaleArg > 0)) throw new Error('--scale must be a positive fraction (<= 1) or a user count');
  const users = scaleArg <= 1 ? Math.round(100_000 * scaleArg) : Math.round(scaleArg);
  const rooms = users * 10;
  const durationS = Number(get('duration') ?? (quick ? 2 : 8));
  const only = get('only');
  const db = get('db') ?? process.env.BENCH_DB ?? 'unread_bench';
  const prefix = get('prefix') ?? process.env.BENCH_PREFIX ?? 'bench:';
  // Both end up in SQL DDL and Redis key patterns: plain names only.
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(db)) throw new Error('--db / BENCH_DB must be a lower-case identifier');
  if (!/^[A-Za-z0-9_.-]{1,40}:$/.test(prefix)) throw new Error('--prefix / BENCH_PREFIX must be letters, digits, _ . - and end with ":"');
  return {
    users,
    rooms,
    durationMs: durationS * 1000,
    quick,
    out: get('out') ?? 'bench-results.json',
    svg: get('svg') ?? 'docs/bench-latency.svg',
    drainChanges: Number(get('drain') ?? (quick ? 50_000 : Math.round(rooms))),
    reuse: argv.includes('--reuse'),
    only: only ? new Set(only.split(',')) : null,
    db,
    prefix,
    readme: get('readme') ?? null,
  };
}

const step = (m: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`);

interface Results {
  startedAt: string;
  options: Omit<BenchOptions, 'only'> & { only: string[] | null };
  machine: { cpus: number; node: string };
  dataset: { users: number; rooms: number; loadSeconds: number; reused: boolean; unreadPairs: number; usersWithUnread: number };
  rebuild?: RebuildResult;
  read?: { runs: ReadRun[] };
  memory?: MemoryResult;
  writeToBadge?: { runs: RateRun[]; users: number; maxRateP99Under50: number | null; socket: string };
  overhead?: OverheadResult;
  drain?: DrainResult;
  drift?: DriftResult;
  /** Issue 13: external harness (ours and the NOTIFY peer), overhead with each system running. */
  push?: PushLatencyResult;
  overheadLive?: OverheadLiveResult;
  targets?: Array<{ target: string; achieved: string; met: boolean | null }>;
  targets13?: Target[];
  bridgeErrors?: number;
  loadAverage?: number[];
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const want = (s: string) => !opts.only || opts.only.has(s);
  const log = createLogger(process.env.BENCH_LOG_LEVEL ?? 'warn', 'bench');
  const { cpus } = await import('node:os');
  step(`dataset: ${opts.users} users, ${opts.rooms} rooms`);
  const ds = await prepareDataset(ADMIN_URL, opts.db, { users: opts.users, rooms: opts.rooms }, { reuse: opts.reuse, log: step });
  const [stats] = await ds.sql<{ pairs: number; users: number }[]>`
    select count(*)::int as pairs, count(distinct user_id)::int as users from unread_sync.unread_truth`;
  step(`dataset ready in ${ds.loadSeconds.toFixed(1)} s (${stats?.pairs} unread (user, room) pairs, ${stats?.users} users with unread)`);
  const users = await allUserIds(ds.sql);
  const ctx = new BenchContext(opts, ds, REDIS_URL, log, users);
  const results: Results = {
    startedAt: new Date().toISOString(),
    options: { ...opts, only: opts.only ? [...opts.only] : null },
    machine: { cpus: cpus().length, node: process.version },
    dataset: {
      users: ds.users,
      rooms: ds.rooms,
      loadSeconds: ds.loadSeconds,
      reused: ds.reused,
      unreadPairs: stats?.pairs ?? 0,
      usersWithUnread: stats?.users ?? 0,
    },
  };
  const triggers = new TriggerSwitch(ds.sql);
  const peers = want('push') || want('idle') || want('overhead-live');
  try {
    await ctx.clearRedis();
    if (peers) await installPeers(ds.sql);
    ctx.startBridge();
    await ctx.waitForBridge(60_000);

    step('5. cold rebuild (also hydrates every user for the scenarios below)');
    results.rebuild = await coldRebuild(ctx, opts.quick ? 10_000 : 30_000, want('rebuild'));
    step(`   cli path ${fmt(results.rebuild.cliPath.usersPerSec)} users/s, bulk ${fmt(results.rebuild.bulkEnqueue.usersPerSec)} users/s`);

    const r = rng(7);
    const sample = Array.from({ length: Math.min(10_000, users.length) }, () => users[Math.floor(r() * users.length)] as string);
    if (want('read') || want('memory')) {
      // Reads need no bridge; stopping it makes any DB transaction in the read phase ours.
      await ctx.waitForBridge();
      await ctx.stopBridge();
      if (want('read')) {
        step('1. badge read');
        results.read = await badgeRead(ctx, sample);
        for (const run of results.read.runs) {
          step(
            `   ${run.system} c=${run.concurrency}: ${fmt(run.opsPerSec)} ops/s p50 ${fmt(run.latency.p50, 3)} p99 ${fmt(run.latency.p99, 3)} ms db xacts ${run.dbXacts ?? 'n/a'}`,
          );
        }
      }
      if (want('memory')) {
        step('6. memory');
        if (!results.read) {
          const { SeedUnreadCountManager } = await import('./baselines/seed-redis.js');
          const seed = new SeedUnreadCountManager(ctx.redis, ctx.prefix);
          for (const u of sample.slice(0, 5_000)) await seed.syncFromDatabase(u, ctx.sql);
        }
        results.memory = await memory(ctx, sample);
        step(`   ours ${fmt(results.memory.ours.perPair)} B/pair, seed ${fmt(results.memory.seed.perPair)} B/pair`);
      }
      ctx.startBridge();
      await ctx.waitForBridge();
    }

    if (want('latency')) {
      step('2. write -> badge latency');
      const { probe, reason } = await loadSocketProbe(ctx);
      const rates = opts.quick ? [100, 1_000, 2_000] : [100, 1_000, 2_000, 4_000, 8_000, 16_000];
      const w = await writeToBadge(ctx, rates, probe);
      results.writeToBadge = { ...w, socket: probe ? 'measured' : `not measured: ${reason}` };
    }

    if (want('overhead')) {
      step('3. write overhead (triggers on / off / on, 8 connections, bridge stopped)');
      await ctx.waitForBridge();
      await ctx.stopBridge();
      results.overhead = await writeOverhead(ctx, !opts.quick || process.argv.includes('--diag'));
      step(`   ratio ${results.overhead.ratio.toFixed(3)}`);
      ctx.startBridge();
      await ctx.waitForBridge();
    }

    if (want('push') || want('idle')) {
      step('2c/2d. external harness: commit -> visible in Redis, ours and the LISTEN/NOTIFY peer');
      results.push = await pushLatency(ctx, triggers, {
        rates: want('push') ? [100, 1_000, 2_000] : [],
        // --quick is CI's smoke: it checks that figures come out, not what they are.
        durationMs: opts.quick ? 1_000 : opts.durationMs,
        idle: want('idle') ? { samples: opts.quick ? 3 : 30, intervalMs: 2_000 } : null,
      });
    }

    if (want('overhead-live')) {
      step('3b. UPDATE throughput with each system running (pgbench, 8 clients)');
      results.overheadLive = await overheadLive(
        ctx,
        triggers,
        opts.quick ? 1 : 2,
        opts.quick ? 1 : Math.max(1, Math.round(opts.durationMs / 1000)),
      );
      for (const c of results.overheadLive.cases) {
        step(
          `   ${c.name}: ours ${c.ratio.ours.toFixed(2)}, notify peer ${c.ratio.notify.toFixed(2)}, postgres peer ${c.ratio.postgres.toFixed(2)} of no-trigger`,
        );
      }
    }

    if (want('drain')) {
      step(`4. bridge drain of ${opts.drainChanges} changes`);
      results.drain = await drain(ctx, opts.drainChanges);
      step(
        `   ${fmt(results.drain.changesPerSec)} changes/s (${results.drain.applied} applied, ${results.drain.unknownUser} unknown-user)`,
      );
    }

    if (want('drift')) {
      step('7. drift under concurrency');
      results.drift = await driftUnderConcurrency(ctx, opts.quick ? 200 : 500, opts.quick ? 2 : 5);
      step(
        `   seed-redis drifted totals ${results.drift.seedRedis.driftedTotal}/${results.drift.users * results.drift.rounds}, ours ${results.drift.ours.drifted}`,
      );
    }
  } finally {
    await ctx.stopBridge();
    if (peers) {
      await triggers.use('ours');
      await uninstallPeers(ds.sql);
    }
    await ctx.clearRedis();
    ctx.redis.disconnect();
    await ds.sql.end({ timeout: 5 });
  }

  results.targets = targets(results);
  results.targets13 = issue13Targets(results);
  results.bridgeErrors = ctx.bridgeErrors;
  results.loadAverage = (await import('node:os')).loadavg();
  const report = renderReport(results, '##');
  process.stdout.write(`\n${report}\n`);
  if (opts.readme) {
    const chart = relative(dirname(opts.readme), opts.svg).split(sep).join('/');
    rewriteReadmeBlock(opts.readme, `${renderReport(results, null)}\n![latency distributions](${chart})\n`);
    step(`rewrote the bench block of ${opts.readme}`);
  }
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, JSON.stringify(results, null, 2));
  mkdirSync(dirname(opts.svg), { recursive: true });
  writeFileSync(
    opts.svg,
    latencySvg(chartPanels(results), `${opts.users} users, ${opts.rooms} rooms, ${opts.durationMs / 1000} s per run, ${results.startedAt}`),
  );
  step(`wrote ${opts.out} and ${opts.svg}`);
}

function chartPanels(res: Results): ChartPanel[] {
  const panels: ChartPanel[] = [];
  if (res.read)
    panels.push({
      title: '1. Badge read',
      series: res.read.runs.map((r) => ({ name: `${r.system} c=${r.concurrency}`, latency: r.latency })),
    });
  if (res.writeToBadge) {
    panels.push({
      title: '2. Commit -> SPUBLISH on the user channel',
      series: res.writeToBadge.runs.map((r) => ({ name: `${r.targetRate}/s target`, latency: r.commitToRedis })),
    });
  }
  if (res.push) {
    const p = res.push;
    panels.push({
      title: '2c. Commit -> visible in Redis (external harness): ours vs LISTEN/NOTIFY peer',
      series: [
        ...p.ours.runs.map((r) => ({ name: `ours ${r.targetRate}/s`, latency: r.commitToRedis })),
        ...p.notify.runs.map((r) => ({ name: `notify peer ${r.targetRate}/s`, latency: r.commitToRedis })),
        ...(p.ours.idle ? [{ name: 'ours, 1 write / 2 s', latency: p.ours.idle.commitToRedis }] : []),
        ...(p.notify.idle ? [{ name: 'notify peer, 1 write / 2 s', latency: p.notify.idle.commitToRedis }] : []),
      ],
    });
  }
  if (res.overhead) {
    panels.push({
      title: '3. UPDATE latency, 8 connections',
      series: [...res.overhead.phases, ...(res.overhead.noNotify ? [res.overhead.noNotify] : [])].map((p) => ({
        name: p.label,
        latency: p.latency,
      })),
    });
  }
  return panels;
}

const lat = (l: LatencySummary) => [fmt(l.p50, 3), fmt(l.p95, 3), fmt(l.p99, 3)];

/** `heading` '##' for the terminal; null for the README block (bold labels: it sits inside a section). */
function renderReport(res: Results, heading: string | null): string {
  const rows: string[][] = [];
  if (res.read) {
    for (const c of [1, 32]) {
      const base = res.read.runs.find((r) => r.concurrency === c && r.system.startsWith('seed-current'));
      for (const r of res.read.runs.filter((x) => x.concurrency === c)) {
        rows.push([
          `1. badge read c=${c}`,
          r.system,
          ...lat(r.latency),
          `${fmt(r.opsPerSec)} reads/s`,
          base ? `${(r.opsPerSec / base.opsPerSec).toFixed(1)}x seed-current` : '',
          r.dbXacts === null ? '' : `db xacts ${r.dbXacts}, chat_rooms scans ${r.chatRoomScans}`,
        ]);
      }
    }
  }
  if (res.writeToBadge) {
    for (const r of res.writeToBadge.runs) {
      rows.push([
        `2a. commit->Redis @${r.targetRate}/s`,
        'ours (trigger -> bridge -> SPUBLISH)',
        ...lat(r.commitToRedis),
        `${fmt(r.achievedRate)} commits/s`,
        '',
        `commit itself p50 ${fmt(r.commit.p50, 2)} p99 ${fmt(r.commit.p99, 2)} ms; lost ${r.lost}`,
      ]);
      if (r.commitToSocket) rows.push([`2b. commit->socket @${r.targetRate}/s`, 'ours', ...lat(r.commitToSocket), '', '', '']);
    }
    if (!res.writeToBadge.runs.some((r) => r.commitToSocket)) {
      rows.push(['2b. commit->socket', 'ours', 'n/a', 'n/a', 'n/a', '', '', res.writeToBadge.socket]);
    }
  }
  if (res.overhead) {
    const o = res.overhead;
    for (const p of [...o.phases, ...(o.noNotify ? [o.noNotify] : [])]) {
      rows.push([
        `3. UPDATE, ${p.label}`,
        p.label.includes('off') ? 'no capture' : 'ours',
        ...lat(p.latency),
        `${fmt(p.opsPerSec)} updates/s`,
        `${(p.opsPerSec / o.offMean).toFixed(2)} of off-mean`,
        '',
      ]);
    }
    rows.push([
      '3. UPDATE, on-mean / off-mean',
      'ours',
      '',
      '',
      '',
      `${fmt(o.onMean)} vs ${fmt(o.offMean)} updates/s`,
      o.ratio.toFixed(2),
      '8 connections, bridge stopped',
    ]);
  }
  if (res.drain) {
    const d = res.drain;
    rows.push([
      '4. bridge drain',
      'ours',
      '',
      '',
      '',
      `${fmt(d.changesPerSec)} changes/s`,
      '',
      `${d.changes} changes in ${d.drainSeconds.toFixed(2)} s (applied ${d.applied}, unknown ${d.unknownUser}, skipped ${d.skipped}, ${d.cycles} cycles${d.bridgeErrors ? `, ${d.bridgeErrors} FAILED CYCLES: connections killed from outside, replayed; number not clean` : ''})`,
    ]);
  }
  if (res.rebuild) {
    const b = res.rebuild;
    rows.push([
      '5. cold rebuild (cli path)',
      'ours',
      '',
      '',
      '',
      `${fmt(b.cliPath.usersPerSec)} users/s`,
      '',
      `${b.cliPath.users} users in ${b.cliPath.seconds.toFixed(2)} s${b.cliPath.timedOut ? ' (time-boxed, not finished)' : ''}; bridge hydrated ${b.cliPath.hydrationsDone}`,
    ]);
    rows.push([
      '5. cold rebuild (bulk enqueue)',
      'ours',
      '',
      '',
      '',
      `${fmt(b.bulkEnqueue.usersPerSec)} users/s`,
      '',
      `${b.bulkEnqueue.users} users in ${b.bulkEnqueue.seconds.toFixed(2)} s`,
    ]);
  }
  if (res.memory) {
    const m = res.memory;
    rows.push([
      '6. memory',
      'ours',
      '',
      '',
      '',
      `${fmt(m.ours.perPair, 1)} B/(user,room)`,
      `${(m.ours.perPair / m.seed.perPair).toFixed(2)}x seed`,
      `${fmt(m.ours.perUser, 1)} B/user, enc ${JSON.stringify(m.ours.encodings)}`,
    ]);
    rows.push([
      '6. memory',
      'seed-redis',
      '',
      '',
      '',
      `${fmt(m.seed.perPair, 1)} B/(user,room)`,
      '1.00',
      `${fmt(m.seed.perUser, 1)} B/user, enc ${JSON.stringify(m.seed.encodings)}`,
    ]);
  }
  if (res.drift) {
    const d = res.drift;
    rows.push([
      '7. drift',
      'seed-redis',
      '',
      '',
      '',
      '',
      '',
      `${d.seedRedis.driftedTotal}/${d.users * d.rounds} user-rounds with wrong total, ${d.seedRedis.driftedRooms} with wrong rooms (${d.rounds} rounds x ${d.users} users, ${d.ops} ops, ${d.writers} writers)`,
    ]);
    rows.push([
      '7. drift',
      'ours',
      '',
      '',
      '',
      '',
      '',
      `${d.ours.drifted}/${d.users * d.rounds} user-rounds drifted (${d.ours.notCached} not cached)`,
    ]);
  }
  const main = markdownTable(['scenario', 'system', 'p50 ms', 'p95 ms', 'p99 ms', 'throughput', 'ratio', 'notes'], rows);
  const t = markdownTable(
    ['target', 'achieved', 'met'],
    (res.targets ?? []).map((x) => [x.target, x.achieved, x.met === null ? 'not measured' : x.met ? 'yes' : 'NO']),
  );
  const env = `bridge cycle failures during the run: ${res.bridgeErrors ?? 0}${res.bridgeErrors ? ' (connections killed from outside, e.g. a concurrent fault-injection test: affected numbers are not clean)' : ''}; load average at end ${(res.loadAverage ?? []).map((x) => x.toFixed(2)).join(' ')} on ${res.machine.cpus} CPUs`;
  const title = (s: string) => (heading ? `${heading} ${s}` : `**${s}.**`);
  const conditions = `${res.dataset.users.toLocaleString('en-US')} users, ${res.dataset.rooms.toLocaleString('en-US')} rooms, ${res.options.durationMs / 1000} s per run${res.options.quick ? ' (--quick)' : ''}, started ${res.startedAt}, Node ${res.machine.node}`;
  return `${[
    `${title('Results')}\n\n${conditions}\n\n${main}\n\n${env}`,
    `${title('Side by side with the peers (issue 13)')}\n\n${sideBySide(res)}`,
    `${title('Targets (issue 13)')}\n\n${targetsTable(res.targets13 ?? [])}`,
    `${title('Targets (earlier issues)')}\n\n${t}`,
  ].join('\n\n')}\n`;
}

function targets(res: Results): Array<{ target: string; achieved: string; met: boolean | null }> {
  const out: Array<{ target: string; achieved: string; met: boolean | null }> = [];
  const at1k = res.writeToBadge?.runs.find((r) => r.targetRate === 1_000);
  const sock = at1k?.commitToSocket;
  out.push({
    target: 'commit->socket p50 <= 2 ms, p99 <= 15 ms @1,000/s',
    achieved: sock
      ? `p50 ${fmt(sock.p50)} / p99 ${fmt(sock.p99)} ms`
      : `socket not measured; commit->Redis p50 ${fmt(at1k?.commitToRedis.p50)} / p99 ${fmt(at1k?.commitToRedis.p99)} ms (a lower bound)`,
    met: sock ? sock.p50 <= 2 && sock.p99 <= 15 : null,
  });
  out.push({
    target: 'highest rate with commit->Redis p99 < 50 ms',
    achieved: res.writeToBadge ? `${res.writeToBadge.maxRateP99Under50 ?? 'none'} commits/s (of rates tried)` : 'n/a',
    met: null,
  });
  if (res.read) {
    const worst = [1, 32].map((c) => {
      const o = res.read!.runs.find((r) => r.concurrency === c && r.system.startsWith('ours'))!;
      const b = res.read!.runs.find((r) => r.concurrency === c && r.system.startsWith('seed-current'))!;
      return { c, ratio: o.opsPerSec / b.opsPerSec, x: o.dbXacts ?? 0, s: o.chatRoomScans ?? 0 };
    });
    out.push({
      target: 'badge read >= 10x seed-current, 0 DB queries',
      achieved: worst.map((w) => `c=${w.c}: ${w.ratio.toFixed(1)}x, ${w.x} xacts, ${w.s} scans`).join('; '),
      met: worst.every((w) => w.ratio >= 10 && w.x === 0 && w.s === 0),
    });
  }
  if (res.overhead) {
    const nn = res.overhead.noNotifyRatio;
    out.push({
      target: 'trigger overhead >= 0.75 of no-trigger throughput (bridge stopped; issue 13 goal 2 has it running)',
      achieved: `${res.overhead.ratio.toFixed(2)}${nn === null ? '' : ` (diagnostic without pg_notify: ${nn.toFixed(2)})`}`,
      met: res.overhead.ratio >= 0.75,
    });
  }
  if (res.drain)
    out.push({ target: 'drain >= 50k changes/s', achieved: `${fmt(res.drain.changesPerSec)}/s`, met: res.drain.changesPerSec >= 50_000 });
  if (res.rebuild) {
    out.push({
      target: 'rebuild >= 50k users/s',
      achieved: `cli path ${fmt(res.rebuild.cliPath.usersPerSec)}/s; bulk enqueue ${fmt(res.rebuild.bulkEnqueue.usersPerSec)}/s`,
      met: res.rebuild.cliPath.usersPerSec >= 50_000,
    });
  }
  if (res.memory)
    out.push({
      target: '<= 100 bytes per (user, unread room)',
      achieved: `${fmt(res.memory.ours.perPair, 1)} B`,
      met: res.memory.ours.perPair <= 100,
    });
  if (res.drift)
    out.push({
      target: '0 drifted users',
      achieved: `ours ${res.drift.ours.drifted}; seed-redis ${res.drift.seedRedis.driftedTotal}`,
      met: res.drift.ours.drifted === 0,
    });
  return out;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
