import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { UnreadReader } from '../src/read/reader.js';
import { NotifyPeerListener, type TriggerSwitch } from './baselines/peers.js';
import type { HarnessPlan, HarnessResult, HarnessTarget } from './commit-harness.js';
import type { BenchContext } from './context.js';

/**
 * Issue 13, scenarios 2c (commit -> Redis at fixed rates) and 2d (one write every 2 s), through
 * the external harness (commit-harness.ts), for ours (trigger -> bridge -> Lua) and the
 * LISTEN/NOTIFY peer (trigger pg_notify -> listener -> HINCRBY), each measured alone: while the
 * peer runs, our triggers are off and the bridge is stopped; the rooms written are then touched
 * once with our capture on, so our mirror is right again for the scenarios that follow.
 */
export interface PushLatencyResult {
  targets: number;
  ours: HarnessResult;
  notify: HarnessResult;
  notifyReceived: number;
}

export interface PushPlan {
  rates: number[];
  /** Per rate. */
  durationMs: number;
  idle: { samples: number; intervalMs: number } | null;
}

/** Individual users with one active room each: every UPDATE moves exactly that user's total by 1. */
export async function harnessRooms(ctx: BenchContext, n: number): Promise<Array<{ user: string; room: string }>> {
  const rows = await ctx.sql<{ user_id: string; id: string }[]>`
    select distinct on (r.user_id) r.user_id::text as user_id, r.id::text as id
      from chat_rooms r join bench_users u on u.id = r.user_id and not u.company
     where r.is_active and r.user_id is distinct from r.company_id
     order by r.user_id, r.id limit ${n}`;
  return rows.map((r) => ({ user: r.user_id, room: r.id }));
}

function commonPrefix(keys: string[]): string {
  let p = keys[0] ?? '';
  for (const k of keys) while (!k.startsWith(p)) p = p.slice(0, -1);
  return p;
}

export async function runHarness(plan: HarnessPlan): Promise<HarnessResult> {
  const file = fileURLToPath(new URL('./commit-harness.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', file], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stdin.end(JSON.stringify(plan));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  });
  if (code !== 0) throw new Error(`commit harness exited with ${code}`);
  return JSON.parse(Buffer.concat(out).toString('utf8')) as HarnessResult;
}

/** Rooms written while our capture was off, touched once with it on (both sides change, so both are logged). */
export async function touchRooms(ctx: BenchContext, roomIds: string[]): Promise<void> {
  for (let i = 0; i < roomIds.length; i += 10_000) {
    await ctx.sql`update chat_rooms set user_unread_count = user_unread_count + 1, company_unread_count = company_unread_count + 1
                   where id::text = any(${roomIds.slice(i, i + 10_000)}::text[])`;
  }
}

export async function pushLatency(ctx: BenchContext, triggers: TriggerSwitch, plan: PushPlan): Promise<PushLatencyResult> {
  const rooms = await harnessRooms(ctx, 500);
  const step = (m: string) => process.stderr.write(`   ${m}\n`);
  const planFor = (targets: HarnessTarget[]): HarnessPlan => ({
    dbUrl: ctx.ds.url,
    redisUrl: ctx.redisUrl,
    trackPrefix: commonPrefix(targets.map((t) => t.key)),
    targets,
    rates: plan.rates,
    durationMs: plan.durationMs,
    idle: plan.idle,
  });

  // Ours: every target cached first (a change of an uncached user is not applied, by design).
  await triggers.use('ours');
  if (!ctx.bridge) ctx.startBridge();
  await ctx.waitForBridge();
  const reader = new UnreadReader(ctx.store, { hydrateTimeoutMs: 60_000 });
  await Promise.all(rooms.map((r) => reader.getTotals(r.user)));
  step('ours (trigger -> bridge -> Lua), bridge running');
  const ours = await runHarness(planFor(rooms.map((r) => ({ ...r, key: ctx.store.keys.user(r.user), field: 't' }))));

  step('LISTEN/NOTIFY peer (trigger pg_notify -> listener -> HINCRBY), our triggers off, bridge stopped');
  await ctx.waitForBridge();
  await ctx.stopBridge();
  const listener = new NotifyPeerListener(ctx.ds.url, ctx.redisUrl, ctx.prefix);
  let notify: HarnessResult;
  try {
    await triggers.use('notify');
    await listener.start();
    notify = await runHarness(planFor(rooms.map((r) => ({ ...r, key: listener.key(r.user), field: 't' }))));
    await listener.drain();
  } finally {
    await listener.stop();
    await triggers.use('ours');
    await touchRooms(
      ctx,
      rooms.map((r) => r.room),
    );
    ctx.startBridge();
    await ctx.waitForBridge();
  }
  return { targets: rooms.length, ours, notify, notifyReceived: listener.received };
}
