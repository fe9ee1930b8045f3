import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../src/reader.js';
import { startBridge } from '../src/runtime.js';
import { verify } from '../src/verify.js';
import {
  createTestDb, createTestRedis, testConfig, testLogger, uuid, waitForBridge, type TestDb, type TestRedis,
} from './support/env.js';
import { bridgeEnv, exited, spawnCli } from './support/processes.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Rooms between a fixed set of users, and a load of random messages and reads from several connections. */
async function seed(db: TestDb, users: number, rooms: number) {
  const ids = Array.from({ length: users }, () => uuid());
  const roomIds = Array.from({ length: rooms }, () => uuid());
  await db.sql`insert into chat_rooms ${db.sql(
    roomIds.map((id, i) => ({ id, user_id: ids[i % users], company_id: ids[(i * 7 + 3) % users], user_unread_count: 0, company_unread_count: 0 })),
  )}`;
  return { users: ids, rooms: roomIds };
}

function load(db: TestDb, rooms: string[], connections: number, until: () => boolean) {
  let written = 0;
  const worker = async () => {
    while (!until()) {
      const id = rooms[Math.floor(Math.random() * rooms.length)]!;
      const roll = Math.random();
      if (roll < 0.75) await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
      else if (roll < 0.9) await db.sql`update chat_rooms set company_unread_count = company_unread_count + 2 where id = ${id}`;
      else await db.sql`update chat_rooms set user_unread_count = 0 where id = ${id}`;
      written++;
    }
  };
  return Promise.all(Array.from({ length: connections }, worker)).then(() => written);
}

async function expectClean(db: TestDb, r: TestRedis, users: string[]) {
  const report = await verify({ sql: db.sql, store: r.store, bridgeName: 'default' });
  expect(report.drifted).toEqual([]);
  // Every user was cached and compared: the check is not vacuous.
  const cached = await Promise.all(users.map((u) => r.store.read(u)));
  expect(cached.filter(Boolean).length).toBe(users.length);
  expect(report.checked).toBeGreaterThanOrEqual(users.length);
}

describe('recovery', () => {
  let db: TestDb;
  let r: TestRedis;
  beforeAll(async () => {
    db = await createTestDb();
    r = await createTestRedis();
  });
  afterAll(async () => {
    await r?.cleanup();
    await db?.drop();
  });

  it('bridge SIGKILLed mid-batch under load, 3 times, restarted each time: verify is clean', async () => {
    const { users, rooms } = await seed(db, 40, 200);
    const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_BATCH_SIZE: '25' });
    let bridge = spawnCli(['bridge'], env);
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
    await Promise.all(users.map((u) => reader.getTotal(u)));

    let done = false;
    const writing = load(db, rooms, 4, () => done);
    for (let kill = 0; kill < 3; kill++) {
      await sleep(300 + Math.random() * 500);
      bridge.kill('SIGKILL');
      await exited(bridge);
      await sleep(100 + Math.random() * 300); // changes commit while no bridge runs
      bridge = spawnCli(['bridge'], env);
    }
    await sleep(300);
    done = true;
    const written = await writing;
    expect(written).toBeGreaterThan(100);
    await waitForBridge(db.sql);
    await expectClean(db, r, users);
    bridge.kill('SIGTERM');
    expect(await exited(bridge)).toBe(0); // clean stop on SIGTERM
  });

  it('Redis data wiped during load: users come back through hydration with correct totals', async () => {
    const wiped = await createTestRedis({ db: 7 });
    const db2 = await createTestDb();
    const running = startBridge(testConfig(db2, wiped), testLogger(), { redis: wiped.redis });
    try {
      const { users, rooms } = await seed(db2, 30, 120);
      const reader = new UnreadReader(wiped.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let done = false;
      const writing = load(db2, rooms, 4, () => done);
      await sleep(400);
      await wiped.redis.flushdb(); // this test owns Redis db 7: the whole keyspace is lost
      // Readers keep reading during the load; every read is correct or hydrates.
      const reads = (async () => {
        while (!done) {
          await reader.getTotal(users[Math.floor(Math.random() * users.length)]!);
          await sleep(5);
        }
      })();
      await sleep(600);
      done = true;
      await Promise.all([writing, reads]);
      await Promise.all(users.map((u) => reader.getTotal(u)));
      await waitForBridge(db2.sql);
      await expectClean(db2, wiped, users);
    } finally {
      await running.stop();
      await wiped.cleanup();
      await db2.drop();
    }
  });

  it('bridge down while thousands of changes commit: it catches up on start and verify is clean', async () => {
    const db3 = await createTestDb();
    const r3 = await createTestRedis();
    let running = startBridge(testConfig(db3, r3), testLogger(), { redis: r3.redis });
    try {
      const { users, rooms } = await seed(db3, 50, 300);
      const reader = new UnreadReader(r3.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      await running.stop();
      // 5,000 changes in a few big transactions and many small ones while nothing reads the log.
      await db3.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = any(${rooms})`;
      let done = false;
      let count = 0;
      await load(db3, rooms, 4, () => ++count > 4_700 || done);
      const [pending] = await db3.sql<{ n: number }[]>`
        select count(*)::int as n from unread_sync.changes c, unread_sync.bridge_state b
         where not pg_visible_in_snapshot(c.xid, b.snapshot)`;
      expect(pending?.n).toBeGreaterThan(4_000);
      running = startBridge(testConfig(db3, r3), testLogger(), { redis: r3.redis });
      done = true;
      await waitForBridge(db3.sql);
      await expectClean(db3, r3, users);
    } finally {
      await running.stop();
      await r3.cleanup();
      await db3.drop();
    }
  });
});
