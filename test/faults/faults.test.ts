import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import postgres from 'postgres';
import pg from 'pg';
import { Redis } from 'ioredis';
import { migrate } from '../../src/migrate.js';
import type { Sql } from '../../src/db.js';
import { UnreadReader } from '../../src/read/reader.js';
import { startBridge } from '../../src/launch.js';
import { createRedis, UnreadStore } from '../../src/store/store.js';
import {
  createTestDb,
  createTestRedis,
  enableCapture,
  testConfig,
  testLogger,
  uuid,
  waitForBridge,
  type TestRedis,
} from '../support/env.js';
import { bridgeEnv, exited, spawnCli } from '../support/processes.js';
import { privatePostgres } from '../support/pg-server.js';
import { privateRedis } from '../support/redis-server.js';
import { converge, printTable, results, seedWorld, sleep, steadyLoad } from './harness.js';

/**
 * Every scenario runs under a steady write load from several connections and ends with a full
 * comparison of Redis against the truth computed from chat_rooms. The table is printed at the end.
 */
afterAll(() => printTable());

const LONG_TX_MS = Number(process.env.FAULT_LONG_TX_MS ?? 60_000);

describe('fault suite', () => {
  it('bridge SIGKILLed 10 times at random moments, restarted each time', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_BATCH_SIZE: '20' });
      let bridge = spawnCli(['bridge'], env);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 20_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      for (let i = 0; i < 10; i++) {
        await sleep(200 + Math.random() * 600);
        bridge.kill('SIGKILL');
        await exited(bridge);
        await sleep(Math.random() * 300);
        bridge = spawnCli(['bridge'], env);
      }
      stop = true;
      const written = await load;
      const t0 = Date.now();
      const out = await converge(db.sql, r.url, r.prefix, users, t0);
      results.push({ scenario: 'bridge SIGKILL x10', written, faults: 10, ...out });
      bridge.kill('SIGTERM');
      await exited(bridge);
      expect(out.drifted).toBe(0);
    } finally {
      await r.cleanup();
      await db.drop();
    }
  });

  it('Redis restarted with its data wiped while clients read badges', async () => {
    const db = await createTestDb();
    const server = await privateRedis(6395);
    const prefix = 'fault:';
    const redis = createRedis(server.url);
    redis.on('error', () => {});
    const running = startBridge(testConfig(db, { url: server.url, prefix } as TestRedis), testLogger(), { redis });
    const readerRedis = new Redis(server.url, { maxRetriesPerRequest: 1, enableAutoPipelining: true });
    readerRedis.on('error', () => {});
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const reader = new UnreadReader(new UnreadStore(readerRedis, prefix), { hydrateTimeoutMs: 20_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let stop = false;
      let readErrors = 0;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      const reads = (async () => {
        while (!stop) {
          await reader.getTotal(users[Math.floor(Math.random() * users.length)]!).catch(() => readErrors++);
          await sleep(2);
        }
      })();
      for (let i = 0; i < 2; i++) {
        await sleep(700);
        await server.kill(); // no persistence: everything is gone
        await sleep(500);
        await server.start();
      }
      await sleep(700);
      stop = true;
      const written = await load;
      await reads;
      const out = await converge(db.sql, server.url, prefix, users);
      results.push({
        scenario: 'Redis restarted, data wiped, readers active',
        written,
        faults: 2,
        ...out,
        note: `${readErrors} reads failed while down`,
      });
      expect(out.drifted).toBe(0);
    } finally {
      await running.stop();
      readerRedis.disconnect();
      await server.stop();
      await db.drop();
    }
  });

  it('Postgres restarted; backends killed with pg_terminate_backend; Redis connections killed with CLIENT KILL', async () => {
    const pgServer = privatePostgres(5498);
    const url = pgServer.url.replace(/\/postgres$/, '/faults');
    const psql = (query: string) =>
      execFileSync('psql', ['-h', '127.0.0.1', '-p', '5498', '-U', 'postgres', '-d', 'postgres', '-Atc', query], { stdio: 'pipe' });
    psql('create database faults');
    await migrate({ databaseUrl: url, direction: 'up' });
    // The load and the bridge run on connections that get killed; node-postgres for the load,
    // the real CLI (supervised like production, restarted if it exits) for the bridge.
    const pool = new pg.Pool({ connectionString: url, max: 4 });
    pool.on('error', () => {});
    const r = await createTestRedis();
    const env = bridgeEnv(url, r.url, r.prefix);
    let bridge = spawnCli(['bridge'], env);
    let exits = 0;
    let supervising = true;
    const supervisor = (async () => {
      while (supervising) {
        await exited(bridge);
        if (!supervising) break;
        exits++;
        bridge = spawnCli(['bridge'], env);
      }
    })();
    const sql = postgres(url, { max: 2, onnotice: () => {} }) as unknown as Sql;
    try {
      const { users, rooms } = await seedWorld(sql);
      await sql.end();
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 20_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let stop = false;
      let written = 0;
      const load = Promise.all(
        Array.from({ length: 4 }, async () => {
          while (!stop) {
            const id = rooms[Math.floor(Math.random() * rooms.length)]!;
            try {
              await pool.query('update chat_rooms set user_unread_count = user_unread_count + 1 where id = $1', [id]);
              written++;
            } catch {
              await sleep(50);
            }
          }
        }),
      );
      let faults = 0;
      await sleep(500);
      pgServer.restart();
      faults++;
      for (let i = 0; i < 3; i++) {
        await sleep(400);
        psql(`select pg_terminate_backend(pid) from pg_stat_activity
               where application_name like 'unread-sync%' and pid <> pg_backend_pid()`);
        faults++;
        await r.redis.call('CLIENT', 'KILL', 'TYPE', 'normal').catch(() => {});
        faults++;
      }
      await sleep(800);
      stop = true;
      await load;
      const check = postgres(url, { max: 2, onnotice: () => {} }) as unknown as Sql;
      try {
        const out = await converge(check, r.url, r.prefix, users);
        results.push({
          scenario: 'Postgres restart + pg_terminate_backend x3 + CLIENT KILL x3',
          written,
          faults,
          ...out,
          note: `bridge process exits: ${exits}`,
        });
        expect(out.drifted).toBe(0);
      } finally {
        await check.end({ timeout: 2 });
      }
    } finally {
      supervising = false;
      bridge.kill('SIGTERM');
      await supervisor;
      await pool.end();
      await r.cleanup();
      pgServer.stop();
    }
  });

  it(`a transaction left open for ${LONG_TX_MS / 1000} s while others commit: neither skipped nor stalling`, async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    const running = startBridge(testConfig(db, r), testLogger(), { redis: r.redis });
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 20_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      const held = rooms[0]!;
      let release!: () => void;
      const released = new Promise<void>((res) => (release = res));
      let opened!: () => void;
      const isOpen = new Promise<void>((res) => (opened = res));
      const longTx = db.sql.begin(async (tx) => {
        await tx`update chat_rooms set user_unread_count = user_unread_count + 1000 where id = ${held}`;
        opened();
        await released;
      });
      await isOpen;
      let stop = false;
      const others = rooms.slice(1);
      const load = steadyLoad(db.sql, others, 4, () => stop);
      // While it is open, later commits keep flowing: the bridge catches up again and again.
      const checks = Math.max(2, Math.floor(LONG_TX_MS / 10_000));
      let maxCatchUpMs = 0;
      for (let i = 0; i < checks; i++) {
        await sleep(LONG_TX_MS / checks - 200);
        const t = Date.now();
        await waitForBridge(db.sql, 'default', 10_000);
        maxCatchUpMs = Math.max(maxCatchUpMs, Date.now() - t);
      }
      release();
      await longTx;
      stop = true;
      const written = await load;
      const out = await converge(db.sql, r.url, r.prefix, users);
      const owner = (await db.sql<{ user_id: string }[]>`select user_id from chat_rooms where id = ${held}`)[0]!.user_id;
      const counts = await r.store.read(owner);
      expect(counts?.rooms[held]).toBeGreaterThanOrEqual(1000); // its change was not skipped
      results.push({
        scenario: `transaction open ${LONG_TX_MS / 1000} s during load`,
        written: written + 1,
        faults: 1,
        ...out,
        note: `catch-up while open <= ${maxCatchUpMs} ms`,
      });
      expect(maxCatchUpMs).toBeLessThan(10_000);
      expect(out.drifted).toBe(0);
    } finally {
      await running.stop();
      await r.cleanup();
      await db.drop();
    }
  });

  it('bridge down for longer than the log retention: gap noticed, cache rebuilt, never silently wrong', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    let running = startBridge(testConfig(db, r), testLogger(), { redis: r.redis });
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 20_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      await waitForBridge(db.sql);
      await running.stop();
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      await sleep(1_500);
      stop = true;
      const written = await load;
      // "Hours later": the unapplied rows are older than max_age and pruned.
      await db.sql`update unread_sync.changes set created_at = now() - interval '30 days'`;
      const [pruned] = await db.sql<{ n: string }[]>`select unread_sync.prune(interval '1 hour', interval '7 days')::text as n`;
      running = startBridge(testConfig(db, r), testLogger(), { redis: r.redis });
      const t0 = Date.now();
      await waitForBridge(db.sql);
      // Stale totals are gone before anything reads them.
      const stale = (await Promise.all(users.map((u) => r.store.read(u)))).filter(Boolean).length;
      expect(stale).toBe(0);
      const out = await converge(db.sql, r.url, r.prefix, users, t0);
      results.push({ scenario: 'bridge down past log retention', written, faults: 1, ...out, note: `${pruned?.n} unapplied rows pruned` });
      expect(out.drifted).toBe(0);
    } finally {
      await running.stop();
      await r.cleanup();
      await db.drop();
    }
  });

  it('duplicated, reordered and malformed events injected between source and apply', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    let injected = 0;
    const interceptor = (rows: unknown[]) => {
      const out = [...rows];
      for (const row of rows) {
        if (Math.random() < 0.3) out.push(row);
        if (Math.random() < 0.05) {
          out.push({ id: 'x', kind: 'set', user_id: "'; drop table chat_rooms; --", room_id: uuid(), unread: 1 });
          injected++;
        }
      }
      for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    };
    const running = startBridge(testConfig(db, r, { UNREAD_BATCH_SIZE: '13' }), testLogger(), { redis: r.redis, interceptor });
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 20_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      await sleep(3_000);
      stop = true;
      const written = await load;
      const out = await converge(db.sql, r.url, r.prefix, users);
      const dead = (await running.bridge.metrics.deadLetters.get()).values[0]?.value ?? 0;
      expect(dead).toBe(injected);
      results.push({
        scenario: 'duplicated + reordered + malformed events',
        written,
        faults: injected,
        ...out,
        note: `${dead} dead-lettered`,
      });
      expect(out.drifted).toBe(0);
    } finally {
      await running.stop();
      await r.cleanup();
      await db.drop();
    }
  });

  it('Redis with a tiny maxmemory and allkeys-lru evicts users but serves only correct totals', async () => {
    const db = await createTestDb();
    const server = await privateRedis(6396, ['--maxmemory', '2mb', '--maxmemory-policy', 'allkeys-lru']);
    const prefix = 'lru:';
    const redis = createRedis(server.url);
    const running = startBridge(testConfig(db, { url: server.url, prefix } as TestRedis), testLogger(), { redis });
    const readerRedis = new Redis(server.url, { enableAutoPipelining: true });
    try {
      const { users, rooms } = await seedWorld(db.sql, 10_000, 20_000);
      const reader = new UnreadReader(new UnreadStore(readerRedis, prefix), { hydrateTimeoutMs: 30_000 });
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      for (let i = 0; i < users.length; i += 200) await Promise.all(users.slice(i, i + 200).map((u) => reader.getTotal(u)));
      stop = true;
      const written = await load;
      await waitForBridge(db.sql);
      const evicted = Number(/evicted_keys:(\d+)/.exec(await readerRedis.info('stats'))?.[1]);
      expect(evicted).toBeGreaterThan(0);
      // Quiescent now: every answer, cached or re-hydrated after eviction, must equal the truth.
      const truthRows = await db.sql<{ user_id: string; total: number }[]>`
        select user_id, sum(unread)::int as total from unread_sync.unread_truth group by user_id`;
      const expected = new Map(truthRows.map((t) => [t.user_id, t.total]));
      let wrong = 0;
      const sample = users.slice(0, 1_000);
      for (let i = 0; i < sample.length; i += 100) {
        const got = await Promise.all(sample.slice(i, i + 100).map((u) => reader.getTotal(u)));
        got.forEach((total, k) => {
          if (total !== (expected.get(sample[i + k]!) ?? 0)) wrong++;
        });
      }
      results.push({
        scenario: 'maxmemory 2 MB allkeys-lru',
        written,
        faults: evicted,
        drifted: wrong,
        convergeMs: 0,
        note: `${evicted} keys evicted, 1,000 reads checked`,
      });
      expect(wrong).toBe(0);
    } finally {
      await running.stop();
      readerRedis.disconnect();
      await server.stop();
      await db.drop();
    }
  });
  // Issue 10 (bridge side): stale writes, two names on one prefix, rewinds, large transactions.
  const scrape = async (port: number, name: string) => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  };
  const waitReady = async (port: number) => {
    for (let i = 0; i < 400; i++) {
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      await sleep(50);
    }
    throw new Error(`bridge on ${port} never ready`);
  };
  /** /readyz once its text matches (a process started under load may take seconds to listen). */
  const readyzMatching = async (port: number, pattern: RegExp) => {
    let last = '';
    for (let i = 0; i < 400; i++) {
      last = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (r) => r.text(),
        (err: Error) => `(${err.message})`,
      );
      if (pattern.test(last)) return last;
      await sleep(50);
    }
    return last;
  };
  const churnHydrations = (store: UnreadStore, users: string[], stop: () => boolean) => {
    const reader = new UnreadReader(store, { hydrateTimeoutMs: 30_000 });
    return (async () => {
      let n = 0;
      while (!stop()) {
        const some = Array.from({ length: 5 }, () => users[Math.floor(Math.random() * users.length)]!);
        await store.forget(some);
        await Promise.all(some.map((u) => reader.getTotal(u))).catch(() => {});
        n += some.length;
      }
      return n;
    })();
  };

  it('issue 10: a bridge SIGSTOPped mid-work resumes after a takeover while users hydrate', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    const [portA, portB] = [21_400 + Math.floor(Math.random() * 200), 21_700 + Math.floor(Math.random() * 200)];
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_BATCH_SIZE: '20', UNREAD_VERIFY_INTERVAL_MS: '200' });
      const a = spawnCli(['bridge'], { ...env, UNREAD_METRICS_PORT: String(portA) });
      await waitReady(portA);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 30_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      const churn = churnHydrations(r.store, users, () => stop);
      let pauses = 0;
      let b: ReturnType<typeof spawnCli> | null = null;
      for (let i = 0; i < 3; i++) {
        await sleep(300 + Math.random() * 300);
        a.kill('SIGSTOP');
        pauses++;
        await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
                      where datname = current_database() and application_name = 'unread-sync bridge (lock)'`;
        b ??= spawnCli(['bridge'], { ...env, UNREAD_METRICS_PORT: String(portB) });
        await sleep(700);
        a.kill('SIGCONT'); // resumes with whatever it had read: its late writes must not land
        await sleep(300);
      }
      stop = true;
      const written = await load;
      const hydrated = await churn;
      const t0 = Date.now();
      const out = await converge(db.sql, r.url, r.prefix, users, t0);
      const repairs = (await scrape(portA, 'unread_sync_drift_repairs_total')) + (await scrape(portB, 'unread_sync_drift_repairs_total'));
      const refused =
        (await scrape(portA, 'unread_sync_stale_writes_refused_total')) + (await scrape(portB, 'unread_sync_stale_writes_refused_total'));
      results.push({
        scenario: 'issue 10: old bridge SIGSTOPped, takeover, SIGCONT (x3) while users re-hydrate',
        written,
        faults: pauses,
        ...out,
        note: `${hydrated} hydrations, ${refused} stale writes refused, verifier repairs ${repairs}`,
      });
      a.kill('SIGTERM');
      b?.kill('SIGTERM');
      await Promise.all([exited(a), b ? exited(b) : null]);
      expect(out.drifted).toBe(0);
      expect(repairs).toBe(0);
    } finally {
      await r.cleanup();
      await db.drop();
    }
  });

  it('issue 10: two bridge names on one key prefix under load', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    const [portA, portB] = [22_000 + Math.floor(Math.random() * 200), 22_300 + Math.floor(Math.random() * 200)];
    const children: ReturnType<typeof spawnCli>[] = [];
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_VERIFY_INTERVAL_MS: '100' });
      const first = spawnCli(['bridge'], { ...env, UNREAD_BRIDGE_NAME: 'first', UNREAD_METRICS_PORT: String(portA) });
      children.push(first);
      await waitReady(portA);
      const second = spawnCli(['bridge'], { ...env, UNREAD_BRIDGE_NAME: 'second', UNREAD_METRICS_PORT: String(portB) });
      children.push(second);
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      const churn = churnHydrations(r.store, users, () => stop);
      await sleep(4_000);
      stop = true;
      const written = await load;
      await churn;
      const readyz = await readyzMatching(portB, /owned by bridge/);
      const t0 = Date.now();
      // converge() waits on bridge 'default'; this one is named 'first'.
      await waitForBridge(db.sql, 'first');
      const out = await (async () => {
        const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 30_000 });
        await Promise.all(users.map((u) => reader.getTotal(u)));
        await waitForBridge(db.sql, 'first');
        const { drifted } = await import('../support/env.js');
        return { drifted: (await drifted(db.sql, r.store, users)).length, convergeMs: Date.now() - t0 };
      })();
      const repairs = await scrape(portA, 'unread_sync_drift_repairs_total');
      results.push({
        scenario: 'issue 10: two bridge names on one prefix (second refused at start-up)',
        written,
        faults: 1,
        ...out,
        note: `verifier repairs ${repairs}`,
      });
      first.kill('SIGTERM');
      second.kill('SIGTERM');
      await Promise.all([exited(first), exited(second)]);
      expect(readyz).toMatch(/owned by bridge/);
      expect(out.drifted).toBe(0);
      expect(repairs).toBe(0);
    } finally {
      // A failed assertion must not leave bridge processes running into the next suites.
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await r.cleanup();
      await db.drop();
    }
  });

  it('issue 10: the database is rewound (log sequence restarted) under load', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    const port = 22_600 + Math.floor(Math.random() * 200);
    try {
      const { users, rooms } = await seedWorld(db.sql);
      const env = bridgeEnv(db.url, r.url, r.prefix, {
        UNREAD_DB_CHECK_INTERVAL_MS: '200',
        UNREAD_VERIFY_INTERVAL_MS: '200',
        UNREAD_METRICS_PORT: String(port),
      });
      const bridge = spawnCli(['bridge'], env);
      await waitReady(port);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 30_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let stop = false;
      const load = steadyLoad(db.sql, rooms, 4, () => stop);
      await sleep(1_000);
      await db.sql`alter table unread_sync.changes alter column id restart with 1`;
      await sleep(2_000);
      stop = true;
      const written = await load;
      const out = await converge(db.sql, r.url, r.prefix, users, Date.now());
      const rewinds = await scrape(port, 'unread_sync_database_rewinds_total');
      const repairs = await scrape(port, 'unread_sync_drift_repairs_total');
      results.push({
        scenario: 'issue 10: log sequence rewound under load (restore/PITR stand-in)',
        written,
        faults: 1,
        ...out,
        note: `${rewinds} rewind detected, verifier repairs ${repairs}`,
      });
      bridge.kill('SIGTERM');
      await exited(bridge);
      expect(rewinds).toBe(1);
      expect(out.drifted).toBe(0);
      expect(repairs).toBe(0);
    } finally {
      await r.cleanup();
      await db.drop();
    }
  });

  it('issue 10: one transaction of 1,000,000 changes with UNREAD_CYCLE_TIMEOUT_MS=5000; hydration while it drains', async () => {
    const db = await createTestDb();
    const r = await createTestRedis();
    const port = 22_900 + Math.floor(Math.random() * 90);
    const ROWS = Number(process.env.FAULT_BIG_TX_ROWS ?? 1_000_000);
    try {
      // 50,000 users with 20 rooms each, loaded without capture (the bridge has not started yet).
      await db.sql`alter table chat_rooms disable trigger user`;
      await db.sql.unsafe(`
        insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
        select gen_random_uuid(), u.id, gen_random_uuid(), 1, 0
          from (select gen_random_uuid() as id from generate_series(1, ${ROWS / 20})) u, generate_series(1, 20)`);
      await enableCapture(db.sql);
      const users = (await db.sql<{ id: string }[]>`select distinct user_id as id from chat_rooms`).map((x) => x.id);
      const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_CYCLE_TIMEOUT_MS: '5000', UNREAD_METRICS_PORT: String(port) });
      const bridge = spawnCli(['bridge'], env);
      await waitReady(port);
      const sample = users.slice(0, 2_000);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 30_000 });
      await Promise.all(sample.map((u) => reader.getTotal(u)));

      const t0 = Date.now();
      await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1`;
      const committedMs = Date.now() - t0;
      // While it drains: fresh users' badges, one every 20 ms (each not cached, so each hydrates).
      let draining = true;
      const latencies: number[] = [];
      const fresh = users.slice(2_000);
      const probes = (async () => {
        let i = 0;
        while (draining && i < fresh.length) {
          const u = fresh[i++]!;
          const s = Date.now();
          await reader.getTotal(u).catch((err: unknown) => {
            console.log(bridge.output().slice(-5000));
            throw err;
          });
          latencies.push(Date.now() - s);
          await sleep(20);
        }
      })();
      const d0 = Date.now();
      await waitForBridge(db.sql, 'default', 600_000);
      const drainMs = Date.now() - d0;
      draining = false;
      await probes;
      latencies.sort((x, y) => x - y);
      const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
      if (process.env.FAULT_DEBUG) console.log(bridge.output().slice(-6000));
      const out = await converge(db.sql, r.url, r.prefix, sample, Date.now());
      const abandoned = await scrape(port, 'unread_sync_bridge_errors_total');
      const repairs = await scrape(port, 'unread_sync_drift_repairs_total');
      console.log(
        `large transaction: ${ROWS} changes committed in ${committedMs} ms, drained in ${drainMs} ms (${Math.round(ROWS / (drainMs / 1000))}/s), ${abandoned} cycles failed; ${latencies.length} hydrations during the drain: p50 ${p(0.5)} ms, p99 ${p(0.99)} ms, max ${latencies.at(-1)} ms`,
      );
      results.push({
        scenario: `issue 10: one ${ROWS.toLocaleString('en')}-change transaction, cycle timeout 5 s`,
        written: ROWS,
        faults: 1,
        ...out,
        note: `drained in ${(drainMs / 1000).toFixed(1)} s, ${abandoned} cycles failed; ${latencies.length} hydrations meanwhile: p50 ${p(0.5)} ms, p99 ${p(0.99)} ms`,
      });
      bridge.kill('SIGTERM');
      await exited(bridge);
      expect(out.drifted).toBe(0);
      expect(abandoned).toBe(0);
      expect(repairs).toBe(0);
    } finally {
      await r.cleanup();
      await db.drop();
    }
  });
});
