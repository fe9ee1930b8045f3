/**
 * Issue 10, case 2's cost question: row-level capture (what the migrations install) against a
 * statement-level AFTER trigger with transition tables (one set-based insert per statement), and
 * no capture at all, measured on
 *   - one UPDATE of every row of a 100k-row chat_rooms (the large statement), and
 *   - single-row UPDATEs from one connection (the app's hot path),
 * while a bridge runs and drains what the statements log.
 *
 * `npx tsx bench/statement-capture.ts [--rows 100000] [--repeat 3] [--single 500]`
 * (also `npm run bench:statement`). Makes and drops its own database; Redis keys under a random
 * "benchstmt…:" prefix, removed at the end. The statement-level function is a measuring prototype
 * (net effect per (user, room) of the statement's old and new rows); it is not installed anywhere.
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config.js';
import { queries, type Sql } from '../src/db.js';
import { createLogger } from '../src/log.js';
import { migrate } from '../src/migrate.js';
import { startBridge } from '../src/launch.js';
import { deletePrefix } from '../test/support/redis-keys.js';

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROWS = arg('rows', 100_000);
const REPEAT = arg('repeat', 3);
const SINGLE = arg('single', 500);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const step = (m: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`);

type Mode = 'none' | 'row' | 'statement';

/** Which capture fires: none, the installed row triggers, or the statement-level prototype. */
async function setMode(sql: Sql, mode: Mode): Promise<void> {
  await sql`alter table chat_rooms disable trigger user`;
  if (mode === 'row') {
    for (const t of ['unread_sync_capture', 'unread_sync_capture_update', 'unread_sync_capture_truncate']) {
      await sql.unsafe(`alter table chat_rooms enable always trigger ${t}`);
    }
  }
  if (mode === 'statement') await sql`alter table chat_rooms enable always trigger bench_capture_statement`;
}

async function waitDrained(sql: Sql): Promise<number> {
  const t0 = Date.now();
  const snapshot = await queries.currentSnapshot(sql);
  while (!(await queries.bridgeHasReached(sql, 'default', snapshot))) await new Promise((r) => setTimeout(r, 10));
  return Date.now() - t0;
}

async function main(): Promise<void> {
  const name = `unread_bench_stmt_${randomBytes(4).toString('hex')}`;
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  const prefix = `benchstmt${randomBytes(3).toString('hex')}:`;
  const redis = new Redis(REDIS_URL, { enableAutoPipelining: true });
  const sql = postgres(url.toString(), { max: 2, onnotice: () => {} }) as unknown as Sql;
  let running: ReturnType<typeof startBridge> | null = null;
  try {
    await migrate({ databaseUrl: url.toString(), direction: 'up' });
    step(`loading ${ROWS} rooms (10 per user)`);
    await sql`alter table chat_rooms disable trigger user`;
    await sql.unsafe(`
      insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
      select gen_random_uuid(), u.id, gen_random_uuid(), 1, 1
        from (select gen_random_uuid() as id from generate_series(1, ${Math.ceil(ROWS / 10)})) u, generate_series(1, 10)
       limit ${ROWS}`);
    await sql`vacuum analyze chat_rooms`;
    // The prototype: net effect per (user, room) of the statement, one insert for all its rows.
    await sql.unsafe(`
      create function public.bench_capture_statement() returns trigger language plpgsql as $$
      begin
        insert into unread_sync.changes (user_id, room_id, unread, negative)
        select coalesce(n.user_id, o.user_id), coalesce(n.room_id, o.room_id), coalesce(n.unread, 0), false
          from (select e.user_id, r.id::text as room_id, e.unread from new_rows r
                 cross join lateral unread_sync.room_unread(r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
                 where e.unread > 0) n
          full join (select e.user_id, r.id::text as room_id, e.unread from old_rows r
                 cross join lateral unread_sync.room_unread(r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
                 where e.unread > 0) o
            on o.user_id = n.user_id and o.room_id = n.room_id
         where n.unread is distinct from o.unread;
        return null;
      end $$;
      create trigger bench_capture_statement after update on chat_rooms
        referencing old table as old_rows new table as new_rows
        for each statement execute function public.bench_capture_statement();`);
    await setMode(sql, 'row');

    const config = loadConfig({
      DATABASE_URL: url.toString(),
      REDIS_URL,
      UNREAD_KEY_PREFIX: prefix,
      UNREAD_METRICS_PORT: '0',
      UNREAD_CHECKPOINT_INTERVAL_MS: '0',
      UNREAD_DB_CHECK_INTERVAL_MS: '3600000',
      UNREAD_VERIFY_INTERVAL_MS: '0',
      LOG_LEVEL: 'warn',
    });
    running = startBridge(config, createLogger('warn'), { redis });
    await waitDrained(sql);
    // Some users cached, so the drain writes to Redis too.
    const users = (await sql<{ user_id: string }[]>`select distinct user_id from chat_rooms limit 2000`).map((r) => r.user_id);
    running.bridge.requestHydration(users);
    await waitDrained(sql);

    const ids = (await sql<{ id: string }[]>`select id::text as id from chat_rooms order by random() limit ${SINGLE}`).map((r) => r.id);
    const results: Record<Mode, { bigMs: number[]; drainMs: number[]; logged: number; singlePerSec: number }> = {
      none: { bigMs: [], drainMs: [], logged: 0, singlePerSec: 0 },
      row: { bigMs: [], drainMs: [], logged: 0, singlePerSec: 0 },
      statement: { bigMs: [], drainMs: [], logged: 0, singlePerSec: 0 },
    };
    // Interleaved rounds in a rotating order, so a load change on the machine hits every mode
    // alike; vacuumed before each (autovacuum may be off, and dead rows would favour whoever ran first).
    const modes: Mode[] = ['none', 'row', 'statement'];
    for (let round = 0; round < REPEAT; round++) {
      for (const mode of [...modes.slice(round % 3), ...modes.slice(0, round % 3)]) {
        await setMode(sql, mode);
        await sql`vacuum chat_rooms`;
        await sql`vacuum unread_sync.changes`;
        const [before] = await sql<{ n: string }[]>`select coalesce(max(id), 0)::text as n from unread_sync.changes`;
        const t0 = Date.now();
        await sql`update chat_rooms set user_unread_count = user_unread_count + 1`;
        results[mode].bigMs.push(Date.now() - t0);
        results[mode].drainMs.push(await waitDrained(sql));
        const [after] = await sql<{ n: string }[]>`select count(*)::text as n from unread_sync.changes where id > ${before!.n}::bigint`;
        results[mode].logged = Number(after!.n);
        // A fresh session, as a pooled app connection would be (no plan cached from the big statement).
        await sql`vacuum chat_rooms`;
        const one = postgres(url.toString(), { max: 1, onnotice: () => {} });
        await one`select 1`;
        const s0 = Date.now();
        for (const id of ids) await one`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
        await one.end();
        results[mode].singlePerSec = Math.max(results[mode].singlePerSec, Math.round(ids.length / ((Date.now() - s0) / 1000)));
        await waitDrained(sql);
        step(
          `round ${round + 1} ${mode}: 100k UPDATE ${results[mode].bigMs.at(-1)} ms, drained in ${results[mode].drainMs.at(-1)} ms, single-row ${results[mode].singlePerSec}/s`,
        );
      }
    }
    await setMode(sql, 'row');
    const none = median(results.none.bigMs);
    const lines = [
      `| capture | ${ROWS.toLocaleString('en')}-row UPDATE, median of ${REPEAT} | vs no capture | change-log rows | bridge drain after commit (median) | single-row UPDATE, 1 connection (best of ${REPEAT}) |`,
      '|---|---:|---:|---:|---:|---:|',
      ...(['none', 'row', 'statement'] as Mode[]).map((m) => {
        const r = results[m];
        const label =
          m === 'none'
            ? 'none (triggers disabled)'
            : m === 'row'
              ? 'row-level (installed)'
              : 'statement-level, transition tables (prototype)';
        return `| ${label} | ${median(r.bigMs)} ms | ${(median(r.bigMs) / none).toFixed(2)}x | ${r.logged.toLocaleString('en')} | ${m === 'none' ? '-' : `${median(r.drainMs)} ms`} | ${r.singlePerSec}/s |`;
      }),
    ];
    console.log(
      `\nStatement capture (bridge running; load average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')})\n${lines.join('\n')}\n`,
    );
  } finally {
    await running?.stop();
    await sql.end({ timeout: 5 });
    await deletePrefix(redis, prefix);
    redis.disconnect();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
