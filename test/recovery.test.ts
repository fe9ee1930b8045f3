import { describe, expect, it } from 'vitest';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge } from '../src/launch.js';
import { verify } from '../src/commands/verify.js';
import { createTestDb, createTestRedis, testConfig, testLogger, waitForBridge, type TestDb, type TestRedis } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { seedWorld, steadyLoad } from './support/load.js';
import { bridgeEnv, exited, spawnCli } from './support/processes.js';
import { sleep } from '../src/sleep.js';

async function expectClean(db: TestDb, r: TestRedis, users: string[]) {
  const report = await verify({ sql: db.sql, store: r.store, bridgeName: 'default' });
  expect(report.drifted).toEqual([]);
  // Every user was cached and compared: the check is not vacuous.
  const cached = await Promise.all(users.map((u) => r.store.read(u)));
  expect(cached.filter(Boolean).length).toBe(users.length);
  expect(report.checked).toBeGreaterThanOrEqual(users.length);
}

describe('recovery', () => {
  const { db, r } = useEnv();

  it('bridge SIGKILLed mid-batch under load, 3 times, restarted each time: verify is clean', async () => {
    const { users, rooms } = await seedWorld(db.sql, 40, 200);
    const env = bridgeEnv(db.url, r.url, r.prefix, { UNREAD_BATCH_SIZE: '25' });
    let bridge = spawnCli(['bridge'], env);
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
    await Promise.all(users.map((u) => reader.getTotal(u)));

    let done = false;
    const writing = steadyLoad(db.sql, rooms, 4, () => done);
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
      const { users, rooms } = await seedWorld(db2.sql, 30, 120);
      const reader = new UnreadReader(wiped.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      let done = false;
      const writing = steadyLoad(db2.sql, rooms, 4, () => done);
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
      const { users, rooms } = await seedWorld(db3.sql, 50, 300);
      const reader = new UnreadReader(r3.store, { hydrateTimeoutMs: 15_000 });
      await Promise.all(users.map((u) => reader.getTotal(u)));
      await running.stop();
      // Thousands of changes, one big transaction and many small ones, while nothing reads the log
      // (some of the load's writes touch inactive rooms and change no badge).
      await db3.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = any(${rooms})`;
      let done = false;
      let count = 0;
      await steadyLoad(db3.sql, rooms, 4, () => ++count > 6_000 || done);
      const [pending] = await db3.sql<{ n: number }[]>`
        select count(*)::int as n from unread_sync.changes c, unread_sync.bridge_state b
         where not pg_visible_in_snapshot(c.xid, b.snapshot)`;
      expect(pending?.n).toBeGreaterThan(2_000);
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
