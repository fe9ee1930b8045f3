import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { changeEventSchema, parseEvent } from '../src/events.js';
import { queries } from '../src/db.js';
import { rebuildAll } from '../src/commands/rebuild.js';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge } from '../src/launch.js';
import { sleep } from '../src/sleep.js';
import { snapshotStamp } from '../src/store/store.js';
import { steppedBridge } from './support/bridge.js';
import { createTestRedis, expectNoDrift, testConfig, testLogger, truth, uuid, waitForBridge, type TestDb } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { steadyLoad } from './support/load.js';

const counter = async (m: { get(): Promise<{ values: Array<{ value: number }> }> }) => (await m.get()).values[0]?.value ?? 0;

/** Many users with a handful of rooms each (own company per room, some shared), inserted in bulk. */
async function seedUsers(db: TestDb, users: number, roomsPerUser: number): Promise<{ users: string[]; rooms: string[] }> {
  const ids = Array.from({ length: users }, () => uuid());
  const rooms: string[] = [];
  const rows = [];
  for (let i = 0; i < users * roomsPerUser; i++) {
    const id = uuid();
    rooms.push(id);
    rows.push({ id, user_id: ids[i % users], company_id: ids[(i * 7 + 3) % users], user_unread_count: i % 4, company_unread_count: i % 3 });
  }
  for (let i = 0; i < rows.length; i += 5_000) await db.sql`insert into chat_rooms ${db.sql(rows.slice(i, i + 5_000))}`;
  return { users: ids, rooms };
}

describe('rebuild and drain throughput paths (issue 13 goal 5)', () => {
  const { db, r } = useEnv();

  it('the rebuild and hydration reads follow the rule of room_unread() on every edge, with plans that have no join', async () => {
    const a = uuid();
    const b = uuid();
    const c = uuid();
    // Every edge of the rule: NULL and negative counts, inactive and NULL is_active, a room whose
    // company is its user, missing user or company.
    const rows: Array<[string | null, string | null, number | null, number | null, boolean | null]> = [
      [a, b, 3, 2, true],
      [a, b, null, 4, true],
      [a, b, -2, 1, true],
      [a, b, 5, 5, false],
      [a, b, 6, 6, null],
      [a, a, 7, 9, true], // counts once, with the user side
      [c, c, 0, 9, true], // the company side of a self-room does not count
      [null, c, 1, 8, true],
      [b, null, 2, 3, true],
      [c, b, 0, 0, true],
    ];
    for (const [u, co, uc, cc, active] of rows) {
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
                   values (${uuid()}, ${u}, ${co}, ${uc}, ${cc}, ${active})`;
    }
    const t = await truth(db.sql);
    const users = (await queries.usersWithUnread(db.sql)).map((x) => x.user_id).sort();
    expect(users).toEqual(Object.keys(t).sort());
    const rooms = await queries.unreadRooms(db.sql, [a, b, c]);
    for (const u of [a, b, c]) {
      expect(Object.fromEntries((rooms.get(u) ?? []).map((x) => [x.roomId, x.unread]))).toEqual(t[u] ?? {});
    }

    // Statistics taken while the table was small, then many rows: the plans stay joins-free (a
    // lateral join to room_unread() got a Memoize node that missed on every row).
    await db.sql`analyze chat_rooms`;
    await seedUsers(db, 2_000, 10);
    const [{ string: usersSql } = { string: '' }] = [await queries.usersWithUnread(db.sql).describe()];
    const plan = (await db.sql.unsafe(`explain ${usersSql}`)).map((x) => Object.values(x)[0]).join('\n');
    expect(plan).not.toMatch(/Memoize|Nested Loop/);
    const { string: roomsSql } = await queries.unreadRoomsQuery(db.sql, [a]).describe();
    const roomsPlan = (
      await db.sql.unsafe(`explain ${roomsSql}`, [
        [a, b],
        [a, b],
      ])
    )
      .map((x) => Object.values(x)[0])
      .join('\n');
    expect(roomsPlan).not.toMatch(/Memoize|Nested Loop/);
    await db.sql`truncate chat_rooms`;
  });

  it('many users per hydrate call: each user older than its stored state is refused, the others written', async () => {
    const users = Array.from({ length: 300 }, () => uuid());
    const room = uuid();
    const old = snapshotStamp('1000:1005:1001');
    const newer = snapshotStamp('1000:1010:');
    // Every third user already has state from a newer snapshot (a change applied at `newer`).
    for (const [i, u] of users.entries()) {
      if (i % 3 === 0) await r.store.apply(new Map([[u, [{ roomId: room, unread: 0, version: '77' }]]]), newer);
    }
    const written = await r.store.hydrate(
      new Map(
        users.map((u, i) => [
          u,
          [
            { roomId: room, unread: i + 1 },
            { roomId: uuid(), unread: 2 },
          ],
        ]),
      ),
      old,
    );
    expect([...written.keys()].sort()).toEqual(users.filter((_, i) => i % 3 !== 0).sort());
    for (const [i, u] of users.entries()) {
      const cached = await r.store.read(u);
      if (i % 3 === 0) expect(cached).toBeNull();
      else expect(cached?.total).toBe(i + 1 + 2);
    }
    // A reset newer than the hydration's snapshot refuses every user of the call.
    await r.store.forgetAll(newer);
    expect((await r.store.hydrate(new Map(users.map((u) => [u, [{ roomId: room, unread: 1 }]])), old)).size).toBe(0);
    expect((await r.store.hydrate(new Map(users.map((u) => [u, [{ roomId: room, unread: 1 }]])), snapshotStamp('1000:1011:'))).size).toBe(
      300,
    );
  });

  it('rebuild of many users while writes go on: read by the workers in the cycle snapshot, 0 drift', async () => {
    const r2 = await createTestRedis();
    const world = await seedUsers(db, 6_000, 5);
    const running = startBridge(testConfig(db, r2), testLogger());
    try {
      await waitForBridge(db.sql);
      let stop = false;
      const load = steadyLoad(db.sql, world.rooms, 3, () => stop);
      const reader = new UnreadReader(r2.store, { hydrateTimeoutMs: 60_000 });
      const report = await rebuildAll({ sql: db.sql, store: r2.store, reader, pageSize: 6_000, bridgeWaitMs: 30_000 });
      // The many-user hydrations were read by the worker connections that import the snapshot.
      const [w] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
         where datname = current_database() and application_name = 'unread-sync bridge (hydration)'`;
      await sleep(300);
      stop = true;
      const written = await load;
      await waitForBridge(db.sql);
      const t = await truth(db.sql);
      expect(report.users).toBeGreaterThan(5_000);
      expect(written).toBeGreaterThan(0);
      expect(w?.n).toBeGreaterThan(0);
      // Every user listed is cached (users who got their first unread from the load afterwards
      // load on demand), and every cached user equals the truth.
      expect(Object.keys(t).length).toBeGreaterThan(0);
      const cached = await r2.store.cached(world.users);
      expect(cached.filter((x) => x).length).toBeGreaterThanOrEqual(report.users);
      await expectNoDrift(db.sql, r2.store, world.users);
      expect(await counter(running.bridge.metrics.driftRepairs)).toBe(0);
      // ensureCached: only the missing users are asked for, and it returns once all are cached.
      const some = world.users.slice(0, 50);
      await r2.store.forget(some.slice(0, 25));
      await reader.ensureCached(some);
      expect((await r2.store.cached(some)).every(Boolean)).toBe(true);
    } finally {
      await running.stop();
      await r2.cleanup();
      await db.sql`truncate chat_rooms`;
    }
  });

  it('a hydration asked for during a long drain is served in the drain snapshot, before the cycle ends', async () => {
    const r3 = await createTestRedis();
    const world = await seedUsers(db, 2_000, 10);
    const config = testConfig(db, r3, { UNREAD_BATCH_SIZE: '2000' });
    let asked = true;
    const probe = world.users[1_234] as string;
    const b = await steppedBridge(config, r3, (rows) => {
      // Asked once the drain runs: the cycle's own hydration list was taken before.
      if (!asked) {
        asked = true;
        void r3.store.requestHydration([probe]);
      }
      return rows;
    });
    try {
      await b.drain();
      // Every cached user is known: one transaction of 40,000 changes.
      await b.hydrate(world.users.slice(0, 100));
      await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1, company_unread_count = company_unread_count + 1`;
      asked = false;
      const cycles = await counter(b.bridge.metrics.cycles);
      await b.bridge.runOnce();
      expect(await counter(b.bridge.metrics.cycles)).toBe(cycles + 1);
      const [cp] = await db.sql<{ snapshot: string }[]>`select snapshot::text as snapshot from unread_sync.bridge_state`;
      const stamp = snapshotStamp(cp?.snapshot ?? '');
      // Loaded within that one cycle, stamped with its snapshot (a newer snapshot would mean
      // it was read beside the cycle; none means it waited for the next).
      expect(await r3.redis.hget(r3.store.keys.user(probe), 'y')).toBe(`${stamp.xmax}:${stamp.inProgress}`);
      await expectNoDrift(db.sql, r3.store, [probe, ...world.users.slice(0, 100)]);
      expect((await r3.store.read(probe))?.total).toBe(Object.values((await truth(db.sql))[probe] ?? {}).reduce((x, y) => x + y, 0));
    } finally {
      await b.stop();
      await r3.cleanup();
      await db.sql`truncate chat_rooms`;
    }
  });

  it('the drain hot path accepts and rejects exactly what the event schema does', () => {
    const roomId = fc.oneof(fc.uuid(), fc.string({ maxLength: 300 }), fc.constant(''), fc.integer().map(String));
    const row = fc.record(
      {
        id: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 54n }).map(String), fc.constant('01'), fc.integer()),
        xid: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n }).map(String), fc.constant('x')),
        kind: fc.constantFrom('set', 'reset', 'other'),
        user_id: fc.oneof(
          fc.uuid(),
          fc.uuid().map((u) => u.toUpperCase()),
          fc.string(),
          fc.constant(null),
        ),
        room_id: roomId,
        unread: fc.oneof(fc.integer({ min: -5, max: 2 ** 31 }), fc.double(), fc.constant(null)),
        negative: fc.oneof(fc.boolean(), fc.constant('no')),
        created_at: fc.oneof(fc.date({ noInvalidDate: true }), fc.string(), fc.constant(null)),
      },
      { requiredKeys: ['kind'] },
    );
    fc.assert(
      fc.property(row, (raw) => {
        const ours = parseEvent(raw);
        const schema = changeEventSchema.safeParse(raw);
        expect(ours.ok).toBe(schema.success);
        if (ours.ok && schema.success) expect(ours.event).toEqual(schema.data);
      }),
      { numRuns: 3_000 },
    );
  });
});
