import { roomField } from '../src/store/keys.js';
import { describe, expect, it } from 'vitest';
import { startBridge } from '../src/launch.js';
import { snapshotStamp } from '../src/store/store.js';
import { sleep } from '../src/sleep.js';
import { createTestRedis, expectNoDrift, testConfig, testLogger, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { steppedBridge } from './support/bridge.js';

const counter = async (m: { get(): Promise<{ values: Array<{ value: number }> }> }) => (await m.get()).values[0]?.value ?? 0;

describe('nothing older overwrites something newer (issue 10, point 6)', () => {
  const { db, r } = useEnv();

  it('Lua: a hydration or repair stamped older than the state it would overwrite is refused', async () => {
    const u = uuid();
    const room = uuid();
    const old = snapshotStamp('100:105:101,102');
    const newer = snapshotStamp('100:105:101'); // same xmax, one fewer in progress: newer
    const newest = snapshotStamp('100:110:');
    await r.store.hydrate(new Map([[u, [{ roomId: room, unread: 5 }]]]), newer);
    // The room drops to 0 in a change read at `newest`: a tombstone with the change's version.
    await r.store.apply(new Map([[u, [{ roomId: room, unread: 0, version: '500002' }]]]), newest);
    // A lagging bridge's snapshot still has 5: refused, the newer tombstone stays.
    const refused = await r.store.hydrate(new Map([[u, [{ roomId: room, unread: 5 }]]]), old);
    expect(refused.size).toBe(0);
    expect((await r.store.read(u))?.total).toBe(0);
    // A late copy of an older change is refused too (the user's state is from `newest`).
    await r.store.apply(new Map([[u, [{ roomId: room, unread: 7, version: '500001' }]]]), old);
    expect((await r.store.read(u))?.total).toBe(0);
    // A hydration at least as new is written and keeps the tombstone's version, so an older
    // change stamped newer (a replay) still cannot revive the room.
    const written = await r.store.hydrate(new Map([[u, [{ roomId: room, unread: 3 }]]]), snapshotStamp('100:120:'));
    expect(written.get(u)?.total).toBe(3);
    expect(await r.redis.hget(r.store.keys.user(u), roomField(room))).toBe('3:500002');
    await r.store.apply(new Map([[u, [{ roomId: room, unread: 9, version: '500001' }]]]), snapshotStamp('100:121:'));
    expect((await r.store.read(u))?.total).toBe(3);

    // Changes for a user nobody caches still record their stamp: an older hydration cannot land.
    const v = uuid();
    await r.store.apply(new Map([[v, [{ roomId: room, unread: 0, version: '9' }]]]), newest);
    expect((await r.store.hydrate(new Map([[v, [{ roomId: room, unread: 4 }]]]), old)).size).toBe(0);
    expect(await r.store.read(v)).toBeNull();
    // After a reset at `newest`, a hydration read before it is refused (the prefix floor).
    const w = uuid();
    await r.store.forgetAll(newest);
    expect((await r.store.hydrate(new Map([[w, [{ roomId: room, unread: 4 }]]]), old)).size).toBe(0);
    expect((await r.store.hydrate(new Map([[w, [{ roomId: room, unread: 4 }]]]), newest)).size).toBe(1);
  });

  it('a bridge paused mid-cycle resumes after a takeover: its late hydration is refused', async () => {
    const config = testConfig(db, r);
    const user = uuid();
    const room = uuid();
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${user}, ${uuid()}, 5)`;
    let release!: () => void;
    let paused!: () => void;
    const pausedAt = new Promise<void>((res) => (paused = res));
    const gate = new Promise<void>((res) => (release = res));
    const a = await steppedBridge(config, r, undefined, {
      sideHydrationAfterMs: 3_600_000, // the late write under test is the cycle's own
      beforeHydrate: async () => {
        paused();
        await gate;
      },
    });
    a.bridge.requestHydration([user]);
    const late = a.bridge.runOnce().catch((err: unknown) => err); // read 5, then paused before writing
    await pausedAt;
    // The old bridge's session is cut (as a network partition or a SIGSTOP past a timeout would).
    await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
                  where datname = current_database() and application_name = 'unread-sync bridge (lock)'`;
    await db.sql`update chat_rooms set user_unread_count = 0 where id = ${room}`;
    const b = await steppedBridge(config, r, undefined, { verifyIntervalMs: 1 });
    await b.drain();
    release();
    await late;
    // The user was not cached when B applied the change; A's snapshot (5) must not land.
    const cached = await r.store.read(user);
    expect(cached === null || cached.total === 0).toBe(true);
    expect(await counter(a.bridge.metrics.staleRefused)).toBe(1);
    await b.hydrate([user]);
    expect((await r.store.read(user))?.total).toBe(0);
    await db.sql`update chat_rooms set user_unread_count = 2 where id = ${room}`;
    await b.drain();
    await b.drain();
    await expectNoDrift(db.sql, r.store, [user]);
    expect((await r.store.read(user))?.total).toBe(2);
    expect(await counter(b.bridge.metrics.driftRepairs)).toBe(0);
    await b.stop();
    await a.stop().catch(() => {});
  });

  it('two bridge names on one key prefix: the second is refused at start-up and never writes', async () => {
    const r2 = await createTestRedis();
    try {
      const first = startBridge(testConfig(db, r2, { UNREAD_BRIDGE_NAME: 'first' }), testLogger());
      for (let i = 0; i < 200 && !first.bridge.status().active; i++) await sleep(25);
      expect(first.bridge.status().active).toBe(true);
      const second = startBridge(testConfig(db, r2, { UNREAD_BRIDGE_NAME: 'second' }), testLogger());
      for (let i = 0; i < 200 && second.bridge.status().lastError === null; i++) await sleep(25);
      expect(second.bridge.status().active).toBe(false);
      expect(second.bridge.status().lastError).toMatch(/owned by bridge "first"/);
      expect(await counter(second.bridge.metrics.prefixConflicts)).toBeGreaterThanOrEqual(1);
      expect(await counter(second.bridge.metrics.cycles)).toBe(0);
      // The second name never took a checkpoint either.
      const names = await db.sql<{ name: string }[]>`select name from unread_sync.bridge_state where name = 'second'`;
      expect(names).toEqual([]);
      await second.stop();
      await first.stop();
      expect(await counter(first.bridge.metrics.driftRepairs)).toBe(0);
    } finally {
      await r2.cleanup();
    }
  });
});
