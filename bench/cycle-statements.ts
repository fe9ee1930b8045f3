/**
 * Postgres statements per bridge cycle, counted on the wire (issue 13).
 *
 *   npx tsx bench/cycle-statements.ts [--rate 500] [--seconds 10]
 *
 * The bridge (src/launch.ts, as `unread-sync bridge` runs it) connects through a small TCP proxy
 * on loopback that reads the frontend protocol: every Bind or simple Query is one statement, every
 * Execute one fetch (a cursor fetches several times per statement). A writer commits `--rate`
 * single-row UPDATEs of chat_rooms per second for `--seconds`, directly; the counts are split by
 * the bridge connection they came from (its application_name) and by what the statement is, and
 * divided by the bridge's cycles. No pg_stat_statements needed (it is not preloaded here).
 * DATABASE_URL / REDIS_URL name the servers (defaults: local); the database is dropped at the end.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import postgres from 'postgres';
import { loadConfig } from '../src/config.js';
import { queries, type Sql } from '../src/db.js';
import { createLogger } from '../src/log.js';
import { migrate } from '../src/migrate.js';
import { startBridge } from '../src/launch.js';

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const RATE = arg('rate', 500);
const SECONDS = arg('seconds', 10);

const admin = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const dbName = `bench_stmts_${randomBytes(4).toString('hex')}`;
const withDb = (url: string, host?: string, port?: number) => {
  const u = new URL(url);
  u.pathname = `/${dbName}`;
  if (host) u.hostname = host;
  if (port) u.port = String(port);
  return u.toString();
};

/** What a statement is, from its text and the connection it came on (cycles run on the lock's). */
function kind(text: string, app: string): string {
  const t = text.replace(/\s+/g, ' ').trim().toLowerCase();
  const cycle = app.endsWith('(lock)');
  if (t.includes('read_cycle')) return 'cycle: read_cycle (one statement)';
  if (/^(begin|commit|rollback)/.test(t)) return cycle ? `cycle: ${t.split(' ')[0]}` : `${t.split(' ')[0]} (checkpoint transaction)`;
  if (t.includes('pg_current_snapshot()::text as snapshot') && t.includes('gap')) return 'cycle: open (snapshot, gap)';
  if (t.includes('from public.chat_rooms r')) return 'cycle: hydration read';
  if (t.includes('has_changes') || t.startsWith('select exists')) return 'poll';
  if (t.includes('insert into unread_sync.bridge_state') || t.includes('synchronous_commit')) return 'checkpoint';
  if (t.includes('prune')) return 'prune';
  if (t.includes('backlog') || t.includes('as n from unread_sync.bridge_state')) return 'backlog';
  if (t.includes('from unread_sync.changes') && t.includes('union all')) return 'cycle: read (cursor)';
  return 'other (identity, triggers, lock, listen)';
}

interface Counts {
  statements: Map<string, number>;
  fetches: number;
}
const byConnection = new Map<string, Counts>();

/** Reads the frontend side of one connection and counts its statements. */
function watcher(): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  let startup = true;
  let app = 'unknown';
  const named = new Map<string, string>();
  const cstr = (b: Buffer, at: number): [string, number] => {
    const end = b.indexOf(0, at);
    return [b.toString('utf8', at, end), end + 1];
  };
  const count = (what: string) => {
    let c = byConnection.get(app);
    if (!c) byConnection.set(app, (c = { statements: new Map(), fetches: 0 }));
    c.statements.set(what, (c.statements.get(what) ?? 0) + 1);
  };
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (startup) {
        if (buf.length < 8) return;
        const len = buf.readInt32BE(0);
        if (buf.length < len) return;
        const code = buf.readInt32BE(4);
        if (code !== 80877103 && code !== 80877104 && code !== 80877102) {
          let at = 8;
          while (at < len - 1) {
            const [k, a1] = cstr(buf, at);
            const [v, a2] = cstr(buf, a1);
            if (k === 'application_name') app = v;
            at = a2;
          }
          startup = false;
        }
        buf = buf.subarray(len);
        continue;
      }
      if (buf.length < 5) return;
      const type = String.fromCharCode(buf[0]!);
      const len = buf.readInt32BE(1);
      if (buf.length < 1 + len) return;
      const body = buf.subarray(5, 1 + len);
      if (type === 'P') {
        const [name, at] = cstr(body, 0);
        named.set(name, cstr(body, at)[0]);
      } else if (type === 'B') {
        const [, at] = cstr(body, 0);
        count(kind(named.get(cstr(body, at)[0]) ?? '', app));
      } else if (type === 'Q') {
        count(kind(cstr(body, 0)[0], app));
      } else if (type === 'E') {
        const c = byConnection.get(app);
        if (c) c.fetches++;
      }
      buf = buf.subarray(1 + len);
    }
  };
}

async function main(): Promise<void> {
  const upstream = new URL(admin);
  const proxy = net.createServer((client) => {
    const server = net.connect(Number(upstream.port || 5432), upstream.hostname);
    const see = watcher();
    client.on('data', (d) => {
      see(d);
      server.write(d);
    });
    server.pipe(client);
    const close = () => {
      client.destroy();
      server.destroy();
    };
    client.on('error', close).on('close', close);
    server.on('error', close).on('close', close);
  });
  await new Promise<void>((res) => proxy.listen(0, '127.0.0.1', res));
  const port = (proxy.address() as net.AddressInfo).port;

  const a = postgres(admin, { max: 1, onnotice: () => {} });
  await a.unsafe(`create database ${dbName}`);
  await a.end();
  const direct = withDb(admin);
  await migrate({ databaseUrl: direct, direction: 'up' });
  const sql = postgres(direct, { max: 4, onnotice: () => {} }) as unknown as Sql;
  const prefix = `stmts${randomBytes(3).toString('hex')}:`;
  const log = createLogger(process.env.BENCH_LOG_LEVEL ?? 'warn');
  const running = startBridge(
    loadConfig({
      DATABASE_URL: withDb(admin, '127.0.0.1', port),
      REDIS_URL: redisUrl,
      UNREAD_KEY_PREFIX: prefix,
      UNREAD_BRIDGE_NAME: 'stmts',
      UNREAD_METRICS_PORT: '0',
      UNREAD_VERIFY_INTERVAL_MS: '0',
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    }),
    log,
  );
  try {
    const rooms = Array.from({ length: 2_000 }, () => randomUUID());
    const users = Array.from({ length: 200 }, () => randomUUID());
    await sql`insert into chat_rooms ${sql(rooms.map((id, i) => ({ id, user_id: users[i % users.length]!, company_id: randomUUID(), user_unread_count: 0 })))}`;
    const waitApplied = async () => {
      const snap = await queries.currentSnapshot(sql);
      while (!(await queries.bridgeHasReached(sql, 'stmts', snap))) await new Promise((r) => setTimeout(r, 20));
    };
    await waitApplied();
    await new Promise((r) => setTimeout(r, 500));
    const cycles = async () => (await running.bridge.metrics.cycles.get()).values[0]?.value ?? 0;
    const applied = async () => (await running.bridge.metrics.changesApplied.get()).values[0]?.value ?? 0;
    const unknown = async () => (await running.bridge.metrics.changesUnknownUser.get()).values[0]?.value ?? 0;
    byConnection.clear();
    const [c0, a0, u0] = [await cycles(), await applied(), await unknown()];
    const t0 = Date.now();

    // The writer: RATE commits/s, paced every 10 ms.
    let sent = 0;
    const total = RATE * SECONDS;
    const writes: Promise<unknown>[] = [];
    await new Promise<void>((done) => {
      const tick = setInterval(() => {
        const due = Math.min(total, Math.round(((Date.now() - t0) / 1000) * RATE));
        while (sent < due) {
          const room = rooms[Math.floor(Math.random() * rooms.length)]!;
          writes.push(sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${room}`);
          sent++;
        }
        if (sent >= total) {
          clearInterval(tick);
          done();
        }
      }, 10);
    });
    await Promise.all(writes);
    await waitApplied();
    const seconds = (Date.now() - t0) / 1000;
    const n = (await cycles()) - c0;
    const changes = (await applied()) - a0 + ((await unknown()) - u0);

    console.log(
      `\n${total.toLocaleString('en-US')} commits at ${RATE}/s; ${n.toLocaleString('en-US')} cycles in ${seconds.toFixed(1)} s, ${(changes / Math.max(1, n)).toFixed(2)} changes per cycle\n`,
    );
    console.log('| connection | statement | count | per cycle |');
    console.log('|---|---|---:|---:|');
    let all = 0;
    let cycleStatements = 0;
    for (const [app, c] of [...byConnection].sort()) {
      for (const [what, count] of [...c.statements].sort()) {
        console.log(`| ${app} | ${what} | ${count.toLocaleString('en-US')} | ${(count / n).toFixed(2)} |`);
        all += count;
        if (what.startsWith('cycle:')) cycleStatements += count;
      }
    }
    const fetches = [...byConnection.values()].reduce((s, c) => s + c.fetches, 0);
    console.log(
      `\ncycle statements per cycle: ${(cycleStatements / n).toFixed(2)}; all bridge statements per cycle: ${(all / n).toFixed(2)}; fetches (Execute) per cycle: ${(fetches / n).toFixed(2)}`,
    );
  } finally {
    await running.stop();
    await sql.end({ timeout: 5 });
    proxy.close();
    const d = postgres(admin, { max: 1, onnotice: () => {} });
    await d.unsafe(`drop database if exists ${dbName} with (force)`);
    await d.end();
    running.bridge.dispose();
  }
  process.exit(0);
}

await main();
