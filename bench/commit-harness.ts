/**
 * External commit -> Redis harness (issue 13), run as its own process so the system under test
 * (our bridge, or a peer's listener, in the bench process) does not share its event loop.
 * It knows nothing of either system: it commits single-row UPDATEs and watches Redis keys.
 *
 * Visibility is seen with Redis client-side caching in broadcast mode: `CLIENT TRACKING ON
 * REDIRECT <id> BCAST PREFIX <prefix>` makes Redis send an invalidation for every write to a key
 * under the prefix, right after the write (a Lua script's or MULTI's after the whole script).
 * On each invalidation of a watched key the harness reads the watched field; the write is
 * visible at the invalidation's arrival once the value read reaches what the commit made it.
 * Latency = visible - commit acknowledged (0 when Redis was first). With several commits of one
 * user in flight, a later one can be credited to an earlier invalidation (at most one Redis round
 * trip early); the 500 target users make that rare even at 2,000 commits/s.
 *
 * Input: a JSON HarnessPlan on stdin. Output: a JSON HarnessResult on stdout.
 */
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { now, Samples, sleep, summarize, type LatencySummary } from './lib.js';

export interface HarnessTarget {
  user: string;
  room: string;
  /** Redis hash holding the user's total in the system under test, and its field. */
  key: string;
  field: string;
}

export interface HarnessPlan {
  dbUrl: string;
  redisUrl: string;
  /** BCAST prefix: every watched key starts with it. */
  trackPrefix: string;
  targets: HarnessTarget[];
  rates: number[];
  durationMs: number;
  /** Rare writes: `samples` single commits, one every `intervalMs`. */
  idle: { samples: number; intervalMs: number } | null;
  /** How long after the last commit a change may still become visible before it counts as lost (10 s). */
  visibleWaitMs?: number;
}

export interface HarnessRun {
  targetRate: number;
  achievedRate: number;
  sent: number;
  commits: number;
  visible: number;
  /** Committed but never seen in Redis (within 10 s of the last commit). */
  lost: number;
  /** Sent but not committed within 30 s of the end of the send window (the writers fell behind). */
  unacked: number;
  commit: LatencySummary;
  commitToRedis: LatencySummary;
}

export interface HarnessResult {
  runs: HarnessRun[];
  idle: HarnessRun | null;
}

interface Pending {
  /** The run it belongs to: a late answer for an earlier run's commit must not count in this one. */
  gen: number;
  expected: number;
  tSend: number;
  tAck: number;
  tVis: number;
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const plan = JSON.parse(Buffer.concat(chunks).toString('utf8')) as HarnessPlan;

  // RESP2 on the invalidation connection: ioredis (RESP3 by default) drops RESP3 invalidate pushes.
  const inval = new Redis(plan.redisUrl, { protocol: 2 });
  const tracker = new Redis(plan.redisUrl);
  const reader = new Redis(plan.redisUrl, { enableAutoPipelining: true });
  const writer = postgres(plan.dbUrl, { max: 16, onnotice: () => {} });
  await writer`select 1`;

  const byKey = new Map(plan.targets.map((t) => [t.key, t]));
  const queues = new Map<string, Pending[]>();
  let commitToRedis = new Samples();
  let commitLat = new Samples();
  let visible = 0;
  let gen = 0;
  let lastInvalidation = 0;
  const done = (p: Pending) => {
    if (p.gen !== gen) return;
    commitToRedis.add(Math.max(0, p.tVis - p.tAck));
    visible++;
  };

  inval.on('messageBuffer', (_channel: Buffer, keys: unknown) => {
    const ti = now();
    lastInvalidation = ti;
    if (!Array.isArray(keys)) return; // null: the whole tracking table was flushed
    for (const k of keys as Buffer[]) {
      const target = byKey.get(k.toString());
      if (!target) continue;
      const q = queues.get(target.key);
      if (!q?.some((p) => p.tVis === 0)) continue;
      void reader.hget(target.key, target.field).then((raw) => {
        const v = Number(raw ?? 0);
        for (const p of q) {
          if (p.tVis === 0 && p.expected <= v) {
            p.tVis = ti;
            if (p.tAck > 0) done(p);
          }
        }
        while (q.length && q[0]!.tVis > 0 && q[0]!.tAck > 0) q.shift();
      });
    }
  });
  const inValId = (await inval.client('ID')) as number;
  await inval.subscribe('__redis__:invalidate');
  await tracker.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', String(inValId), 'BCAST', 'PREFIX', plan.trackPrefix);

  const issued = new Map<string, number>();
  const base = new Map<string, number>();
  // Before each run the watched keys must be quiet: a system still applying an earlier run's
  // backlog would make this run's expected values come true early. Returns the wait in ms.
  const settle = async () => {
    const t0 = now();
    while (now() - lastInvalidation < 300 && now() - t0 < 60_000) await sleep(20);
    return now() - t0;
  };
  const reset = async () => {
    const waited = await settle();
    if (waited > 1_000) process.stderr.write(`     (waited ${(waited / 1000).toFixed(1)} s for the system to finish the previous run)\n`);
    gen++;
    queues.clear();
    issued.clear();
    commitToRedis = new Samples();
    commitLat = new Samples();
    visible = 0;
    await Promise.all(plan.targets.map(async (t) => base.set(t.key, Number((await reader.hget(t.key, t.field)) ?? 0))));
  };
  let sent = 0;
  let commits = 0;
  const send = (t: HarnessTarget) => {
    const n = (issued.get(t.key) ?? 0) + 1;
    issued.set(t.key, n);
    const p: Pending = { gen, expected: (base.get(t.key) ?? 0) + n, tSend: now(), tAck: 0, tVis: 0 };
    let q = queues.get(t.key);
    if (!q) queues.set(t.key, (q = []));
    q.push(p);
    sent++;
    return writer`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${t.room}`.then(
      () => {
        if (p.gen !== gen) return;
        p.tAck = now();
        commitLat.add(p.tAck - p.tSend);
        commits++;
        if (p.tVis > 0) done(p);
      },
      () => {},
    );
  };
  const finish = async (rate: number, start: number): Promise<HarnessRun> => {
    const ackDeadline = now() + 30_000;
    while (commits < sent && now() < ackDeadline) await sleep(5);
    // Commits acknowledged over the whole run, including the tail after the send window.
    const achievedRate = commits / ((now() - start) / 1000);
    const visDeadline = now() + (plan.visibleWaitMs ?? 10_000);
    while (visible < commits && now() < visDeadline) await sleep(5);
    return {
      targetRate: rate,
      achievedRate,
      sent,
      commits,
      visible,
      lost: commits - visible,
      unacked: sent - commits,
      commit: summarize(commitLat),
      commitToRedis: summarize(commitToRedis),
    };
  };

  const result: HarnessResult = { runs: [], idle: null };
  let k = 0;
  for (const rate of plan.rates) {
    await reset();
    sent = 0;
    commits = 0;
    const start = now();
    const end = start + plan.durationMs;
    // Open loop: commits go out on schedule whatever the latency, so queueing shows up.
    while (now() < end) {
      const due = Math.floor(((now() - start) / 1000) * rate);
      while (sent < due) void send(plan.targets[k++ % plan.targets.length]!);
      await sleep(1);
    }
    const run = await finish(rate, start);
    result.runs.push(run);
    process.stderr.write(
      `     ${rate}/s: achieved ${run.achievedRate.toFixed(0)}/s, commit->Redis p50 ${run.commitToRedis.p50.toFixed(2)} p99 ${run.commitToRedis.p99.toFixed(2)} ms, lost ${run.lost}\n`,
    );
  }
  if (plan.idle) {
    await reset();
    sent = 0;
    commits = 0;
    const start = now();
    for (let i = 0; i < plan.idle.samples; i++) {
      const tick = now();
      await sleep(plan.idle.intervalMs);
      await send(plan.targets[k++ % plan.targets.length]!);
      const deadline = tick + plan.idle.intervalMs + 5_000;
      while (visible < commits && now() < deadline) await sleep(1);
    }
    const run = await finish(0, start);
    result.idle = run;
    process.stderr.write(
      `     one write every ${plan.idle.intervalMs} ms: commit->Redis p50 ${run.commitToRedis.p50.toFixed(2)} p99 ${run.commitToRedis.p99.toFixed(2)} ms, lost ${run.lost}\n`,
    );
  }
  await writer.end({ timeout: 5 });
  inval.disconnect();
  tracker.disconnect();
  reader.disconnect();
  process.stdout.write(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
