import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queries } from '../src/db.js';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { testConfig, testLogger, truth, uuid, waitForBridge, type TestDb } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { bridgeEnv, exited, spawnCli } from './support/processes.js';
import { steppedBridge } from './support/bridge.js';

const count = async (db: TestDb) => (await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes`)[0]?.n ?? 0;

describe('log retention', () => {
  const { db, r } = useEnv();

  it('prune deletes only applied rows older than min_age; unapplied rows stay', async () => {
    const stepper = await steppedBridge(testConfig(db, r), r);
    try {
      const [u, c, room] = [uuid(), uuid(), uuid()];
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${c}, 1)`;
      await stepper.drain(); // applied
      await db.sql`update chat_rooms set user_unread_count = 2 where id = ${room}`; // not applied yet
      expect(await count(db)).toBe(2);
      expect(await queries.prune(db.sql, 3600, 86_400)).toBe(0); // too young
      expect(await queries.prune(db.sql, 0, 86_400)).toBe(1); // the applied row only
      expect(await count(db)).toBe(1);
      await stepper.hydrate([u]);
      await stepper.drain();
      expect((await r.store.read(u))?.total).toBe(2);
    } finally {
      await stepper.stop();
    }
  });

  it('a bridge that fell behind max_age sees the gap, forgets its cache and serves correct totals again', async () => {
    const stepper = await steppedBridge(testConfig(db, r), r);
    const [u, c, room] = [uuid(), uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${c}, 1)`;
    await stepper.hydrate([u]);
    expect((await r.store.read(u))?.total).toBe(1);
    await stepper.stop(); // the bridge is down...
    await db.sql`update chat_rooms set user_unread_count = 7 where id = ${room}`;
    // ...longer than the log's retention: the unapplied change is pruned.
    await db.sql`update unread_sync.changes set created_at = now() - interval '10 days'`;
    expect(await queries.prune(db.sql, 0, 86_400)).toBeGreaterThan(0);
    const [lost] = await db.sql`select value from unread_sync.meta where key = 'pruned_unapplied_xid'`;
    expect(lost).toBeDefined();

    const back = await steppedBridge(testConfig(db, r), r);
    try {
      await back.drain();
      // Never silently wrong: the stale total is gone, and the next read hydrates the truth.
      expect(await r.store.read(u)).toBeNull();
      await expect(back.bridge.metrics.resets.get()).resolves.toMatchObject({ values: [{ value: 1 }] });
      await back.hydrate([u]);
      expect((await r.store.read(u))?.total).toBe(7);
    } finally {
      await back.stop();
    }
  });
});

describe('CLI: badge, verify, rebuild', () => {
  const { db, r } = useEnv();
  let running: RunningBridge;
  beforeAll(async () => {
    // Periodic verifier off: the CLI must be what finds and repairs the drift injected below.
    running = startBridge(testConfig(db, r, { UNREAD_VERIFY_INTERVAL_MS: '0' }), testLogger(), { redis: r.redis });
  });
  afterAll(async () => {
    await running?.stop();
  });
  const cli = async (...args: string[]) => {
    const child = spawnCli(args, bridgeEnv(db.url, r.url, r.prefix));
    const code = await exited(child);
    return { code, out: child.output() };
  };

  it('badge prints the counts (hydrating through the bridge), verify finds and repairs drift', async () => {
    const [u, c] = [uuid(), uuid()];
    const rooms = [uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values
      (${rooms[0]!}, ${u}, ${c}, 3), (${rooms[1]!}, ${u}, ${c}, 4)`;
    const badge = await cli('badge', u, '--json');
    expect(badge.code).toBe(0);
    expect(JSON.parse(badge.out.trim().split('\n').at(-1)!)).toMatchObject({ userId: u, total: 7, unreadRooms: 2 });

    expect((await cli('verify')).code).toBe(0);
    // Corrupt Redis behind the bridge's back: verify must see it and exit 1.
    await r.redis.hset(r.store.keys.user(u), 't', '100');
    const drifted = await cli('verify');
    expect(drifted.code).toBe(1);
    expect(drifted.out).toContain(`drift ${u}: redis total 100, database total 7`);
    // --repair reloads the user through the bridge, checks it again, says so and exits 0.
    const repaired = await cli('verify', '--repair');
    expect(repaired.code).toBe(0);
    expect(repaired.out).toMatch(/repaired 1 of 1 drifted users/);
    await new UnreadReader(r.store).getTotal(u);
    const clean = await cli('verify');
    expect(clean.code).toBe(0);
    expect(clean.out).toMatch(/0 drifted/);
  });

  it('rebuild reloads every user with unread through the bridge', async () => {
    const users = Array.from({ length: 20 }, () => uuid());
    await db.sql`insert into chat_rooms ${db.sql(users.map((u, i) => ({ id: uuid(), user_id: u, company_id: uuid(), user_unread_count: i + 1 })))}`;
    const out = await cli('rebuild');
    expect(out.code).toBe(0);
    await waitForBridge(db.sql);
    const t = await truth(db.sql);
    for (const u of users) expect((await r.store.read(u))?.total).toBe(Object.values(t[u]!).reduce((a, b) => a + b, 0));
    const one = await cli('rebuild', '--user', users[0]!);
    expect(one.out).toContain(`rebuilt ${users[0]}: 1 unread in 1 room(s)`);
  });
});
