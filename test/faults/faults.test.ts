import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import postgres from 'postgres';
import pg from 'pg';
import { Redis } from 'ioredis';
import { migrate } from '../../src/migrate.js';
import type { Sql } from '../../src/db.js';
import { UnreadReader } from '../../src/reader.js';
import { startBridge } from '../../src/runtime.js';
import { createRedis, UnreadStore } from '../../src/store/store.js';
import { createTestDb, createTestRedis, testConfig, testLogger, uuid, waitForBridge, type TestRedis } from '../support/env.js';
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
      results.push({ scenario: 'Redis restarted, data wiped, readers active', written, faults: 2, ...out, note: `${readErrors} reads failed while down` });
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
        results.push({ scenario: 'Postgres restart + pg_terminate_backend x3 + CLIENT KILL x3', written, faults, ...out, note: `bridge process exits: ${exits}` });
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
      results.push({ scenario: `transaction open ${LONG_TX_MS / 1000} s during load`, written: written + 1, faults: 1, ...out, note: `catch-up while open <= ${maxCatchUpMs} ms` });
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
      results.push({ scenario: 'duplicated + reordered + malformed events', written, faults: injected, ...out, note: `${dead} dead-lettered` });
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
      results.push({ scenario: 'maxmemory 2 MB allkeys-lru', written, faults: evicted, drifted: wrong, convergeMs: 0, note: `${evicted} keys evicted, 1,000 reads checked` });
      expect(wrong).toBe(0);
    } finally {
      await running.stop();
      readerRedis.disconnect();
      await server.stop();
      await db.drop();
    }
  });
});
