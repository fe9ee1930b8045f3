/**
 * Commit -> Redis latency of the two log sources side by side: polling (UNREAD_SOURCE=postgres)
 * and logical decoding as a wake-up (UNREAD_SOURCE=auto on a wal_level=logical server).
 *
 *   npx tsx bench/idle-latency.ts [--writes 20] [--rates 100,1000,2000] [--duration 5000] [--json out.json]
 *
 * Idle: one UPDATE every 2 s on a cached user's room; the latency is from the commit's ack to
 * the user's shard-channel message, which the apply script publishes after writing the hash (so
 * the value is visible in Redis by then). Rates: the bench's open-loop write-to-badge scenario.
 */
import { writeFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { createLogger } from '../src/log.js';
import { UnreadReader } from '../src/read/reader.js';
import { parseTotalsMessage } from '../src/store/store.js';
import { BenchContext } from './context.js';
import { allUserIds, prepareDataset } from './dataset.js';
import { Samples, fmt, markdownTable, now, sleep, summarize, type LatencySummary } from './lib.js';
import { writeToBadge, type RateRun } from './scenarios.js';

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const writes = Number(arg('writes', '20'));
const rates = arg('rates', '100,1000,2000').split(',').filter(Boolean).map(Number);
const durationMs = Number(arg('duration', '5000'));
const jsonOut = arg('json', '');

async function metricsText(ctx: BenchContext): Promise<string> {
  return (await ctx.bridge?.bridge.metrics.registry.metrics()) ?? '';
}

async function idleRun(ctx: BenchContext, n: number): Promise<LatencySummary> {
  const [target] = await ctx.sql<{ user_id: string; id: string }[]>`
    select r.user_id::text as user_id, r.id::text as id
      from chat_rooms r join bench_users u on u.id = r.user_id and not u.company
     where r.is_active and r.user_id is distinct from r.company_id
     order by r.id limit 1`;
  if (!target) throw new Error('no target room');
  const sub = new Redis(REDIS_URL);
  const samples = new Samples();
  let waiting: { expected: number; tAck: number; tMsg: number; done: () => void } | null = null;
  sub.on('smessage', (_channel: string, message: string) => {
    const t = now();
    const totals = parseTotalsMessage(message);
    if (waiting && totals && totals.total >= waiting.expected && waiting.tMsg === 0) {
      waiting.tMsg = t;
      waiting.done();
    }
  });
  await sub.ssubscribe(ctx.store.keys.channel(target.user_id));
  try {
    for (let i = 0; i < n; i++) {
      await sleep(2_000);
      const base = (await ctx.store.readTotals(target.user_id))?.total ?? 0;
      let done!: () => void;
      const arrived = new Promise<void>((resolve) => (done = resolve));
      waiting = { expected: base + 1, tAck: 0, tMsg: 0, done };
      const w = waiting;
      await ctx.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${target.id}`;
      w.tAck = now();
      await Promise.race([arrived, sleep(5_000)]);
      if (w.tMsg === 0) throw new Error('change did not reach Redis within 5 s');
      samples.add(Math.max(0, w.tMsg - w.tAck));
    }
  } finally {
    sub.disconnect();
  }
  return summarize(samples);
}

async function main(): Promise<void> {
  const log = createLogger(process.env.BENCH_LOG_LEVEL ?? 'warn', 'bench');
  const step = (m: string) => process.stderr.write(`${m}\n`);
  const ds = await prepareDataset(ADMIN_URL, 'unread_bench_idle', { users: 2_000, rooms: 10_000 }, { reuse: true, log: step });
  const users = await allUserIds(ds.sql);
  const ctx = new BenchContext(
    // Not the main bench's database or prefix: both may run at once on shared servers.
    {
      users: 2_000,
      rooms: 10_000,
      durationMs,
      quick: false,
      out: '',
      svg: '',
      drainChanges: 0,
      reuse: true,
      only: null,
      db: 'unread_bench_idle',
      prefix: 'bench-idle:',
      readme: null,
    },
    ds,
    REDIS_URL,
    log,
    users,
  );
  const results: Array<{ source: string; mode: string; idle: LatencySummary; rates: RateRun[] }> = [];
  try {
    for (const source of ['postgres', 'auto'] as const) {
      await ctx.clearRedis();
      await ds.sql`delete from unread_sync.bridge_state`;
      ctx.startBridge({ UNREAD_SOURCE: source });
      // First cycle (a first start resets the cache), then the stream (slot creation waits for
      // every running transaction on the server).
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        const text = await metricsText(ctx);
        const ready =
          ctx.bridge!.bridge.status().lastCycleAt !== null &&
          (source === 'postgres' || /unread_sync_source_mode\{mode="logical"\} 1/.test(text));
        if (ready) break;
        await sleep(50);
      }
      const mode = /unread_sync_source_mode\{mode="(\w+)"\} 1/.exec(await metricsText(ctx))?.[1] ?? 'polling';
      step(`source ${source} (${mode}): hydrating ${users.length} users`);
      const reader = new UnreadReader(ctx.store, { hydrateTimeoutMs: 30_000 });
      for (let i = 0; i < users.length; i += 500) await Promise.all(users.slice(i, i + 500).map((u) => reader.getTotal(u)));
      step(`  idle: ${writes} writes, one every 2 s`);
      const idle = await idleRun(ctx, writes);
      step(`  idle commit->redis p50 ${fmt(idle.p50)} p99 ${fmt(idle.p99)} max ${fmt(idle.max)} ms`);
      const w = rates.length > 0 ? await writeToBadge(ctx, rates, null) : { runs: [] };
      results.push({ source, mode, idle, rates: w.runs });
      await ctx.stopBridge();
    }
  } finally {
    await ctx.close();
    await ds.sql.end();
  }
  const rows: string[][] = [];
  for (const r of results) {
    rows.push([`${r.source} (${r.mode})`, 'one write / 2 s', fmt(r.idle.p50), fmt(r.idle.p99), fmt(r.idle.max), String(r.idle.count)]);
    for (const run of r.rates) {
      rows.push([
        `${r.source} (${r.mode})`,
        `${run.targetRate}/s (achieved ${run.achievedRate.toFixed(0)})`,
        fmt(run.commitToRedis.p50),
        fmt(run.commitToRedis.p99),
        fmt(run.commitToRedis.max),
        `${run.delivered} (lost ${run.lost})`,
      ]);
    }
  }
  process.stdout.write(`${markdownTable(['source', 'load', 'commit->Redis p50 ms', 'p99 ms', 'max ms', 'samples'], rows)}\n`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, 2));
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
