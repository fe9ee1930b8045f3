/**
 * Prune on a large log, before and after migration 1764000000008 (issue 13, goal 3).
 *
 *   npx tsx bench/prune.ts [--rows 5000000] [--delete 100000]
 *
 * Builds a fresh database migrated up to the migration before 1764000000008, loads `--rows` log
 * rows (all applied: a checkpoint is taken after them, all younger than min_age) and times one
 * maintenance round as the bridge runs it (prune batches until one deletes less than a batch):
 * with nothing to delete, and with `--delete` rows older than min_age. Then it applies
 * 1764000000008 (the CREATE INDEX CONCURRENTLY is timed too) and measures the same again. The plan
 * of prune's read (from auto_explain) is printed with each figure. DATABASE_URL (default
 * postgres://postgres@127.0.0.1:5432/postgres) names the server; the database is dropped at the end.
 */
import { readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { migrate, MIGRATIONS_DIR } from '../src/migrate.js';
import { queries, type Sql } from '../src/db.js';

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const ROWS = arg('rows', 5_000_000);
const DELETE = arg('delete', 100_000);
const MIN_AGE_S = 3_600;
const MAX_AGE_S = 7 * 86_400;
const MIGRATION = '1764000000008';

const admin = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const name = `bench_prune_${randomBytes(4).toString('hex')}`;
const url = (() => {
  const u = new URL(admin);
  u.pathname = `/${name}`;
  return u.toString();
})();

const notices: string[] = [];

/** Node types (and index) of the plans that read unread_sync.changes, from auto_explain. */
function scans(): string {
  const found = new Set<string>();
  const walk = (n: { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; Plans?: unknown[] }) => {
    if (n['Relation Name'] === 'changes' && n['Node Type'] !== 'ModifyTable')
      found.add(n['Index Name'] ? `${n['Node Type']} using ${n['Index Name']}` : n['Node Type']);
    for (const c of (n.Plans ?? []) as (typeof n)[]) walk(c);
  };
  for (const m of notices)
    if (m.includes('plan:')) walk((JSON.parse(m.slice(m.indexOf('{'))) as { Plan: Parameters<typeof walk>[0] }).Plan);
  notices.length = 0;
  return [...found].join(', ');
}

/** One maintenance round as the bridge runs it: batches until one deletes less than a batch. */
async function round(sql: Sql, batch: number): Promise<{ ms: number; deleted: number; calls: number; plan: string }> {
  notices.length = 0;
  const t0 = performance.now();
  let deleted = 0;
  let calls = 0;
  for (;;) {
    const n = await queries.prune(sql, MIN_AGE_S, MAX_AGE_S, batch);
    calls++;
    deleted += n;
    if (n < batch) break;
  }
  return { ms: performance.now() - t0, deleted, calls, plan: scans() };
}

async function addOld(sql: Sql, n: number): Promise<void> {
  await sql`insert into unread_sync.changes (user_id, room_id, unread, created_at)
            select gen_random_uuid(), 'old' || g, 1, now() - interval '2 hours' - g * interval '1 ms'
              from generate_series(1, ${n}::int) g`;
  await sql`update unread_sync.bridge_state set snapshot = pg_current_snapshot() where name = 'bench'`;
}

async function main(): Promise<void> {
  const a = postgres(admin, { max: 1, onnotice: () => {} });
  await a.unsafe(`create database ${name}`);
  await a.end();
  const sql = postgres(url, { max: 1, onnotice: (n) => notices.push(String(n.message)) }) as unknown as Sql;
  try {
    const before = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.(sql|js)$/.test(f) && f < MIGRATION).length;
    await migrate({ databaseUrl: url, direction: 'up', count: before });
    await sql`load 'auto_explain'`;
    await sql.unsafe(`set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;
                      set auto_explain.log_level = notice; set auto_explain.log_format = json`);
    let t = performance.now();
    // Loaded in slices (one huge transaction would hold an xid and WAL for minutes); all recent.
    const slice = 500_000;
    for (let done = 0; done < ROWS; done += slice) {
      await sql`insert into unread_sync.changes (user_id, room_id, unread, created_at)
                select gen_random_uuid(), g::text, 1, now() - interval '30 minutes' + g * interval '300 microseconds'
                  from generate_series(${done + 1}::int, ${Math.min(ROWS, done + slice)}::int) g`;
    }
    await sql`vacuum analyze unread_sync.changes`;
    await sql`insert into unread_sync.bridge_state (name, snapshot) values ('bench', pg_current_snapshot())`;
    console.log(`loaded ${ROWS.toLocaleString('en-US')} rows in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    notices.length = 0;

    const results: Array<[string, string, Awaited<ReturnType<typeof round>>]> = [];
    results.push(['before', 'nothing to delete', await round(sql, 100_000)]);
    await addOld(sql, DELETE);
    results.push(['before', `${DELETE.toLocaleString('en-US')} to delete`, await round(sql, 100_000)]);
    results.push(['before', 'nothing to delete (after that)', await round(sql, 100_000)]);

    t = performance.now();
    await migrate({ databaseUrl: url, direction: 'up', count: 1 });
    console.log(
      `migration ${MIGRATION} (CREATE INDEX CONCURRENTLY on ${ROWS.toLocaleString('en-US')} rows): ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    notices.length = 0;
    results.push(['after', 'nothing to delete', await round(sql, 10_000)]);
    await addOld(sql, DELETE);
    results.push(['after', `${DELETE.toLocaleString('en-US')} to delete`, await round(sql, 10_000)]);
    results.push(['after', 'nothing to delete (after that)', await round(sql, 10_000)]);

    console.log('\n| prune round | log rows | deleted | calls | ms | read |');
    console.log('|---|---:|---:|---:|---:|---|');
    for (const [when, what, r] of results) {
      console.log(
        `| ${when}: ${what} | ${ROWS.toLocaleString('en-US')} | ${r.deleted.toLocaleString('en-US')} | ${r.calls} | ${r.ms.toFixed(1)} | ${r.plan} |`,
      );
    }
  } finally {
    await sql.end({ timeout: 5 });
    const d = postgres(admin, { max: 1, onnotice: () => {} });
    await d.unsafe(`drop database if exists ${name} with (force)`);
    await d.end();
  }
}

await main();
