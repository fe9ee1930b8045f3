import { randomBytes } from 'node:crypto';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import postgres from 'postgres';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { sleep } from '../src/sleep.js';
import { LogicalSource, LogicalUnavailableError } from '../src/sources/logical.js';
import { formatLsn, parseLsn } from '../src/sources/pgoutput.js';
import { xidVisibleIn } from '../src/sources/snapshot.js';
import { PostgresSource } from '../src/sources/postgres.js';
import { verify } from '../src/commands/verify.js';
import { testConfig, testLogger, waitForBridge, withDatabase, type TestDb, type TestRedis } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { seedWorld, steadyLoad } from './support/load.js';
import { bridgeEnv, exited, spawnCli } from './support/processes.js';
import { sourceOptions } from './support/bridge.js';

/** Value of one sample of a bridge metric ("name{labels}"), or null. */
async function metric(running: RunningBridge, name: string, labels = ''): Promise<number | null> {
  const text = await running.bridge.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : null;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}

/**
 * Users are cached only after the bridge's first cycle: a first start forgets the whole cache,
 * including a user hydrated beside that cycle while it was slow to begin (seen under load).
 */
async function firstCycle(running: RunningBridge): Promise<void> {
  await until('first cycle', async () => running.bridge.status().lastCycleAt !== null);
}

/** The bridge's temporary slots on `db` with their walsender pid. */
async function slots(db: TestDb): Promise<Array<{ slot_name: string; active_pid: number | null; temporary: boolean }>> {
  return db.sql<Array<{ slot_name: string; active_pid: number | null; temporary: boolean }>>`
    select slot_name, active_pid, temporary from pg_replication_slots where database = ${db.name} order by slot_name`;
}

async function expectClean(db: TestDb, r: TestRedis, users: string[]) {
  const report = await verify({ sql: db.sql, store: r.store, bridgeName: 'default' });
  expect(report.drifted).toEqual([]);
  const cached = await Promise.all(users.map((u) => r.store.read(u)));
  expect(cached.filter(Boolean).length).toBe(users.length);
}

/**
 * A TCP proxy to Postgres that can stall replication connections (those whose startup packet
 * asks for replication): their server side stops being read, so neither data nor keepalives
 * reach the bridge, as with a hung network path.
 */
async function stallingProxy(target: URL): Promise<{ url: string; stall(): void; close(): Promise<void> }> {
  const pairs: Array<{ client: Socket; upstream: Socket; replication: boolean }> = [];
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(Number(target.port || 5432), target.hostname);
    const pair = { client, upstream, replication: false };
    pairs.push(pair);
    let first = true;
    client.on('data', (d: Buffer) => {
      if (first) pair.replication = d.includes('replication');
      first = false;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => client.write(d));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const url = new URL(target.toString());
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return {
    url: url.toString(),
    stall: () => {
      for (const p of pairs) if (p.replication && !p.client.destroyed) p.upstream.pause();
    },
    close: async () => {
      for (const p of pairs) p.upstream.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('pgoutput helpers', () => {
  it('LSNs round-trip; xid visibility across the 32-bit epoch boundary', () => {
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
    expect(xidVisibleIn(100, '90:120:105')).toBe(true);
    expect(xidVisibleIn(105, '90:120:105')).toBe(false);
    expect(xidVisibleIn(120, '90:120:')).toBe(false);
    // xmax in epoch 1 (2^32 + 10): xid 4294967290 belongs to epoch 0 and is visible.
    expect(xidVisibleIn(4294967290, '4294967200:4294967306:')).toBe(true);
    expect(xidVisibleIn(5, '4294967200:4294967306:')).toBe(true);
    expect(xidVisibleIn(11, '4294967200:4294967306:')).toBe(false);
  });

  it('LogicalSource forwards every method of the postgres source', () => {
    const methods = (proto: object) => Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor');
    const missing = methods(PostgresSource.prototype).filter(
      // Private helpers only; every public method must be forwarded.
      (m) =>
        !(m in LogicalSource.prototype) &&
        ![
          'reconnect',
          'persist',
          'notify',
          'sleepOrWake',
          'readSmall',
          'readLarge',
          'readInSnapshot',
          'writeCheckpoint',
          'checkpointBeside',
        ].includes(m),
    );
    expect(missing).toEqual([]);
  });
});

describe('logical source (UNREAD_SOURCE=auto on a wal_level=logical server)', () => {
  const { db, r } = useEnv();

  it('auto picks logical; rare changes arrive by the stream, before the backed-off probe', async () => {
    let wakeups = 0;
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
    // Polling idles at up to 60 s here: the badge below moves because the stream woke the bridge.
    const running = startBridge(testConfig(db, r, { UNREAD_POLL_INTERVAL_MS: '60000' }), log);
    try {
      await firstCycle(running);
      await until('stream open', async () => (await metric(running, 'unread_sync_source_mode', '{mode="logical"}')) === 1);
      expect(lines.some((l) => l.includes('change source: logical decoding'))).toBe(true);
      const [slot] = await slots(db);
      expect(slot?.slot_name).toMatch(/^unread_sync_default_[0-9a-f]{8}$/);
      expect(slot?.temporary).toBe(true);
      expect(slot?.active_pid).not.toBeNull();

      const { users, rooms } = await seedWorld(db.sql, 4, 8);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      // Three rare writes: the probe has backed off to seconds by then, so the stream wakes the
      // bridge first (the counter counts only waits a streamed commit ended).
      for (let i = 1; i <= 3; i++) {
        await sleep(3_000);
        const woken = (await metric(running, 'unread_sync_logical_wakeups_total')) ?? 0;
        const before = (await r.store.read(users[0]!))?.total ?? 0;
        await db.sql`update chat_rooms set user_unread_count = user_unread_count + 5 where id = ${rooms[0]!}`;
        await until('badge moved', async () => (await r.store.read(users[0]!))?.total === before + 5);
        if (((await metric(running, 'unread_sync_logical_wakeups_total')) ?? 0) > woken) wakeups++;
      }
      expect(wakeups).toBeGreaterThan(0);
    } finally {
      await running.stop();
    }
    // The temporary slot went with the bridge.
    expect(await slots(db)).toEqual([]);
  });

  it('polls while the slot waits for a running transaction, then streams', async () => {
    const holder = postgres(db.url, { max: 1, onnotice: () => {} });
    const reserved = await holder.reserve();
    await reserved`begin`;
    await reserved`select pg_current_xact_id()`; // an xid: slot creation waits for it
    const running = startBridge(testConfig(db, r, { UNREAD_POLL_INTERVAL_MS: '50' }), testLogger());
    try {
      await firstCycle(running);
      const { users, rooms } = await seedWorld(db.sql, 2, 2);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      await reader.getTotal(users[0]!);
      await db.sql`update chat_rooms set user_unread_count = 7 where id = ${rooms[0]!}`;
      await until('badge by polling', async () => (await r.store.read(users[0]!))?.rooms[rooms[0]!] === 7);
      expect(await metric(running, 'unread_sync_source_mode', '{mode="polling"}')).toBe(1);
      await reserved`commit`;
      await until('stream open', async () => (await metric(running, 'unread_sync_source_mode', '{mode="logical"}')) === 1);
    } finally {
      reserved.release();
      await holder.end();
      await running.stop();
    }
  });

  it('walsender terminated under load: falls back to polling, opens a new slot, 0 lost', async () => {
    const running = startBridge(testConfig(db, r), testLogger());
    try {
      await firstCycle(running);
      await until('stream open', async () => (await metric(running, 'unread_sync_source_mode', '{mode="logical"}')) === 1);
      const { users, rooms } = await seedWorld(db.sql, 20, 80);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let done = false;
      const writing = steadyLoad(db.sql, rooms, 3, () => done);
      await sleep(300);
      const [first] = await slots(db);
      expect(first?.active_pid).toBeTruthy();
      await db.sql`select pg_terminate_backend(${first!.active_pid!})`;
      await until('failure counted', async () => ((await metric(running, 'unread_sync_logical_stream_failures_total')) ?? 0) >= 1);
      await sleep(300); // writes while polling
      await until('a new slot streams', async () => {
        const now = await slots(db);
        return (
          (await metric(running, 'unread_sync_source_mode', '{mode="logical"}')) === 1 &&
          now.length === 1 &&
          now[0]!.slot_name !== first!.slot_name
        );
      });
      await sleep(300); // writes on the new stream
      done = true;
      expect(await writing).toBeGreaterThan(50);
      await waitForBridge(db.sql);
      await expectClean(db, r, users);
    } finally {
      await running.stop();
    }
  });

  it('a stream that stalls (no data, no keepalive) is replaced by a new slot; polling meanwhile, 0 lost', async () => {
    const proxy = await stallingProxy(new URL(db.url));
    const config = testConfig(db, r);
    const source = new LogicalSource({
      ...sourceOptions(config, testLogger()),
      databaseUrl: proxy.url,
      mode: 'auto',
      stallMs: 1_000,
    });
    const running = startBridge(config, testLogger(), { source });
    try {
      await firstCycle(running);
      await until('stream open', async () => source.mode === 'logical');
      const { users, rooms } = await seedWorld(db.sql, 10, 40);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let done = false;
      const writing = steadyLoad(db.sql, rooms, 2, () => done);
      const stalled = source.slotName;
      proxy.stall();
      await until('stall noticed', async () => ((await metric(running, 'unread_sync_logical_stream_failures_total')) ?? 0) >= 1);
      await until('a new slot streams', async () => source.mode === 'logical' && source.slotName !== stalled);
      await sleep(300);
      done = true;
      expect(await writing).toBeGreaterThan(20);
      await waitForBridge(db.sql);
      await expectClean(db, r, users);
    } finally {
      await running.stop();
      await proxy.close();
    }
  });

  it('bridge SIGKILLed mid-load and restarted: 0 drift, the dead bridge leaves no slot', async () => {
    const { users, rooms } = await seedWorld(db.sql, 30, 120);
    const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_BATCH_SIZE: '25' });
    let bridge = spawnCli(['bridge'], env);
    try {
      // The stream opens after the bridge's first cycle (the one that forgets the cache) began;
      // a moment later it has ended, and users cached from then on stay.
      await until('stream open', async () => (await slots(db)).some((s) => s.active_pid !== null));
      await sleep(1_000);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let done = false;
      const writing = steadyLoad(db.sql, rooms, 3, () => done);
      for (let kill = 0; kill < 2; kill++) {
        await sleep(400 + Math.random() * 400);
        const [before] = await slots(db);
        bridge.kill('SIGKILL');
        await exited(bridge);
        await sleep(200);
        bridge = spawnCli(['bridge'], env);
        await until('old slot gone, new one streaming', async () => {
          const now = await slots(db);
          return now.length === 1 && now[0]!.slot_name !== before?.slot_name && now[0]!.active_pid !== null;
        });
      }
      await sleep(300);
      done = true;
      expect(await writing).toBeGreaterThan(50);
      await waitForBridge(db.sql);
      await expectClean(db, r, users);
    } finally {
      bridge.kill('SIGTERM');
      expect(await exited(bridge)).toBe(0);
    }
    expect(await slots(db)).toEqual([]);
  });
});

describe('logical source without the REPLICATION attribute', () => {
  const role = `us_norepl_${randomBytes(4).toString('hex')}`;
  // Registered before useEnv, so it runs after the database (whose grants name the role) is dropped.
  afterAll(async () => {
    const admin = postgres(withDatabase(db.url, 'postgres'), { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop role if exists ${role}`);
    await admin.end();
  });
  const { db, r } = useEnv();
  let url: string;
  beforeAll(async () => {
    await db.sql.unsafe(`create role ${role} login nosuperuser noreplication`);
    await db.sql.unsafe(`grant all on schema public, unread_sync to ${role}`);
    await db.sql.unsafe(`grant all on all tables in schema public, unread_sync to ${role}`);
    await db.sql.unsafe(`grant all on all sequences in schema public, unread_sync to ${role}`);
    await db.sql.unsafe(`grant execute on all functions in schema unread_sync to ${role}`);
    const u = new URL(withDatabase(db.url, db.name));
    u.username = role;
    u.password = '';
    url = u.toString();
  });

  it('auto falls back to polling, says why, and the metric says so; changes still arrive', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
    const running = startBridge({ ...testConfig(db, r), databaseUrl: url }, log);
    try {
      await firstCycle(running);
      const { users, rooms } = await seedWorld(db.sql, 2, 2);
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      await reader.getTotal(users[0]!);
      await db.sql`update chat_rooms set user_unread_count = 4 where id = ${rooms[0]!}`;
      await until('badge by polling', async () => (await r.store.read(users[0]!))?.rooms[rooms[0]!] === 4);
      expect(await metric(running, 'unread_sync_source_mode', '{mode="polling"}')).toBe(1);
      expect(await metric(running, 'unread_sync_source_mode', '{mode="logical"}')).toBe(0);
      const decision = lines.find((l) => l.includes('change source: polling'));
      expect(decision).toMatch(/neither REPLICATION nor superuser/);
      expect(await slots(db)).toEqual([]);
    } finally {
      await running.stop();
    }
  });

  it('UNREAD_SOURCE=logical refuses to start with a clear error', async () => {
    const source = new LogicalSource({
      databaseUrl: url,
      bridgeName: 'default',
      batchSize: 100,
      checkpointIntervalMs: 0,
      pollMinMs: 2,
      logMinAgeSeconds: 3600,
      logMaxAgeSeconds: 86400,
      log: testLogger(),
      mode: 'logical',
    });
    try {
      const err = await source.start(new AbortController().signal).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LogicalUnavailableError);
      expect((err as Error).message).toMatch(
        /UNREAD_SOURCE=logical, but logical decoding is unavailable: the role has neither REPLICATION nor superuser/,
      );
    } finally {
      await source.stop();
    }
    // Through the runtime: the bridge does not become active and /readyz carries the reason.
    const running = startBridge({ ...testConfig(db, r, { UNREAD_SOURCE: 'logical' }), databaseUrl: url }, testLogger());
    try {
      await until('error reported', async () => /logical decoding is unavailable/.test(running.bridge.status().lastError ?? ''));
      expect(running.bridge.status().active).toBe(false);
      await expect(running.readiness.bridge!()).rejects.toThrow(/REPLICATION/);
    } finally {
      await running.stop();
    }
  });
});
