import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NotifyPeerListener, type LiveSystem, type TriggerSwitch } from './baselines/peers.js';
import type { BenchContext } from './context.js';
import { touchRooms } from './push-latency.js';

const run = promisify(execFile);

/**
 * Issue 13, scenario 3b: UPDATE throughput with each system *running*: pgbench, 8 clients,
 * single-row UPDATEs of unread counts; no trigger, ours with the bridge applying, the NOTIFY peer
 * with its listener applying, the Postgres-only peer. Two cases: uniform (random rooms, user
 * side) and hot (100 rooms of one company, company side: every write moves one company's total).
 * Phases alternate (ABCD, then DCBA in full runs) so drift in the machine hits every system.
 */
export interface LivePhase {
  system: LiveSystem;
  tps: number;
  latencyAvgMs: number;
  /** After pgbench ended: how long the system took to apply what was written (bridge / listener). */
  catchUpMs: number | null;
}

export interface LiveCase {
  name: 'uniform' | 'hot';
  rooms: number;
  phases: LivePhase[];
  tps: Record<LiveSystem, number>;
  ratio: Record<LiveSystem, number>;
}

export interface OverheadLiveResult {
  clients: number;
  seconds: number;
  rounds: number;
  pgbench: string;
  cases: LiveCase[];
}

const SYSTEMS: LiveSystem[] = ['none', 'ours', 'notify', 'postgres'];

function pgbenchPath(): string {
  return process.env.PGBENCH ?? '/usr/lib/postgresql/15/bin/pgbench';
}

export async function overheadLive(
  ctx: BenchContext,
  triggers: TriggerSwitch,
  rounds: number,
  seconds: number,
): Promise<OverheadLiveResult> {
  const clients = 8;
  // Pick tables, so pgbench can choose a room id by a random integer.
  await ctx.sql.unsafe(`
    drop table if exists bench_pick_uniform, bench_pick_hot;
    create table bench_pick_uniform as
      select row_number() over ()::int as i, id from
        (select id from chat_rooms where is_active order by md5(id::text) limit 20000) s;
    alter table bench_pick_uniform add primary key (i);
    create table bench_pick_hot as
      select row_number() over ()::int as i, id from
        (select id from chat_rooms
          where is_active and company_id is distinct from user_id
            and company_id = (select company_id from chat_rooms
                               where is_active and company_id is distinct from user_id and company_id is not null
                               group by company_id having count(*) >= 100 order by count(*) desc, company_id limit 1)
          order by id limit 100) s;
    alter table bench_pick_hot add primary key (i);
    analyze bench_pick_uniform; analyze bench_pick_hot;`);
  const [{ u, h } = { u: 0, h: 0 }] = await ctx.sql<{ u: number; h: number }[]>`
    select (select count(*)::int from bench_pick_uniform) as u, (select count(*)::int from bench_pick_hot) as h`;
  const dir = mkdtempSync(join(tmpdir(), 'bench-pgbench-'));
  const scripts = {
    uniform: join(dir, 'uniform.sql'),
    hot: join(dir, 'hot.sql'),
  };
  writeFileSync(
    scripts.uniform,
    `\\set i random(1, ${u})\nupdate chat_rooms set user_unread_count = user_unread_count + 1 where id = (select id from bench_pick_uniform where i = :i);\n`,
  );
  writeFileSync(
    scripts.hot,
    `\\set i random(1, ${h})\nupdate chat_rooms set company_unread_count = company_unread_count + 1 where id = (select id from bench_pick_hot where i = :i);\n`,
  );

  const url = new URL(ctx.ds.url);
  const env = { ...process.env, PGPASSWORD: decodeURIComponent(url.password), PGAPPNAME: 'unread-sync-bench' };
  const pgbench = async (script: string) => {
    const { stdout } = await run(
      pgbenchPath(),
      [
        '-n',
        '-M',
        'prepared',
        '-c',
        String(clients),
        '-j',
        '2',
        '-T',
        String(seconds),
        '-f',
        script,
        '-h',
        url.hostname,
        '-p',
        url.port || '5432',
        '-U',
        decodeURIComponent(url.username) || 'postgres',
        url.pathname.slice(1),
      ],
      { env, maxBuffer: 1 << 20 },
    );
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1]);
    const lat = Number(/latency average = ([\d.]+) ms/.exec(stdout)?.[1]);
    if (!Number.isFinite(tps)) throw new Error(`pgbench printed no tps:\n${stdout}`);
    return { tps, lat };
  };

  const listener = new NotifyPeerListener(ctx.ds.url, ctx.redisUrl, ctx.prefix);
  const pickRooms = async (table: string) =>
    (await ctx.sql.unsafe<{ id: string }[]>(`select id::text as id from ${table}`)).map((r) => r.id);
  const pick = { uniform: await pickRooms('bench_pick_uniform'), hot: await pickRooms('bench_pick_hot') };
  let captureWasOff = false;
  const phase = async (system: LiveSystem, name: 'uniform' | 'hot'): Promise<LivePhase> => {
    const script = scripts[name];
    // Only the measured system runs: the bridge for ours, the listener for the NOTIFY peer.
    if (system !== 'ours' && ctx.bridge) {
      await ctx.waitForBridge();
      await ctx.stopBridge();
    }
    await triggers.use(system);
    if (system === 'ours') {
      // Rows written while our capture was off, touched once with it on before the bridge starts:
      // otherwise its verifier finds (and repairs) that drift during the measured phase.
      if (captureWasOff) await touchRooms(ctx, pick[name]);
      captureWasOff = false;
      if (!ctx.bridge) ctx.startBridge();
      await ctx.waitForBridge();
    } else {
      captureWasOff = true;
    }
    if (system === 'notify') await listener.start();
    // Every phase starts right after a checkpoint, so full-page writes weigh the same on each.
    await ctx.sql.unsafe('checkpoint');
    const { tps, lat } = await pgbench(script);
    let catchUpMs: number | null = null;
    const t0 = performance.now();
    if (system === 'ours') {
      await ctx.waitForBridge();
      catchUpMs = performance.now() - t0;
    }
    if (system === 'notify') {
      catchUpMs = await listener.drain();
      await listener.stop();
    }
    process.stderr.write(
      `     ${system}: ${tps.toFixed(0)} tps${catchUpMs === null ? '' : `, caught up ${catchUpMs.toFixed(0)} ms after`}\n`,
    );
    return { system, tps, latencyAvgMs: lat, catchUpMs };
  };

  const cases: LiveCase[] = [];
  try {
    for (const name of ['uniform', 'hot'] as const) {
      process.stderr.write(`   ${name} (${name === 'uniform' ? `${u} rooms, user side` : `${h} rooms of one company, company side`})\n`);
      const phases: LivePhase[] = [];
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? SYSTEMS : [...SYSTEMS].reverse();
        for (const s of order) phases.push(await phase(s, name));
      }
      const tps = Object.fromEntries(
        SYSTEMS.map((s) => {
          const xs = phases.filter((p) => p.system === s);
          return [s, xs.reduce((a, p) => a + p.tps, 0) / xs.length];
        }),
      ) as Record<LiveSystem, number>;
      const ratio = Object.fromEntries(SYSTEMS.map((s) => [s, tps[s] / tps.none])) as Record<LiveSystem, number>;
      cases.push({ name, rooms: name === 'uniform' ? u : h, phases, tps, ratio });
    }
  } finally {
    await listener.stop();
    if (ctx.bridge) {
      await ctx.waitForBridge();
      await ctx.stopBridge();
    }
    await triggers.use('ours');
    // Rows written while our capture was off: one touch with it on puts our mirror right again.
    await touchRooms(ctx, [...pick.uniform, ...pick.hot]);
    await ctx.sql.unsafe('drop table if exists bench_pick_uniform, bench_pick_hot');
    rmSync(dir, { recursive: true, force: true });
    ctx.startBridge();
    await ctx.waitForBridge();
  }
  return { clients, seconds, rounds, pgbench: pgbenchPath(), cases };
}
