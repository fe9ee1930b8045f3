import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { describe, expect, inject, it } from 'vitest';
import type { Sql } from '../src/db.js';
import { createTestDb, createTestRedis, expectNoDrift, testConfig, uuid, withDatabase } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { steppedBridge } from './support/bridge.js';

const run = promisify(execFile);
const value = async (m: { get(): Promise<{ values: Array<{ value: number }> }> }) => (await m.get()).values[0]?.value ?? 0;

async function world(sql: Sql, n: number) {
  const users = Array.from({ length: n }, () => uuid());
  const rooms = users.map(() => uuid());
  await sql`insert into chat_rooms ${sql(users.map((u, i) => ({ id: rooms[i]!, user_id: u, company_id: uuid(), user_unread_count: 3 })))}`;
  return { users, rooms };
}

describe('database rewound or moved (issue 10, point 4)', () => {
  const { db, r } = useEnv();

  it('the log sequence goes back (restore/PITR): cache reset, later changes are not skipped as stale', async () => {
    const bridge = await steppedBridge(testConfig(db, r), r, undefined, { identityCheckMs: 0, verifyIntervalMs: 1 });
    try {
      const { users, rooms } = await world(db.sql, 20);
      await bridge.hydrate(users);
      // Many versions in Redis...
      for (let i = 0; i < 5; i++) await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = any(${rooms})`;
      await bridge.drain();
      expect((await r.store.read(users[0]!))?.total).toBe(8);
      // ...then the database comes back from a backup taken before them: the sequence hands out
      // ids at or below what Redis holds, and the restored rows have the older values.
      await db.sql`alter table unread_sync.changes alter column id restart with 1`;
      await db.sql`update chat_rooms set user_unread_count = 2 where id = any(${rooms})`;
      await bridge.drain();
      expect(await value(bridge.bridge.metrics.rewinds)).toBe(1);
      // Nothing stale is served: users are unknown and rehydrate from the restored truth.
      await bridge.hydrate(users);
      await db.sql`update chat_rooms set user_unread_count = 4 where id = ${rooms[0]!}`;
      await bridge.drain();
      expect((await r.store.read(users[0]!))?.total).toBe(4);
      expect((await r.store.read(users[1]!))?.total).toBe(2);
      await expectNoDrift(db.sql, r.store, users);
      expect(await value(bridge.bridge.metrics.driftRepairs)).toBe(0);
      // Once reset, the same horizons are not a rewind again.
      await bridge.drain();
      expect(await value(bridge.bridge.metrics.rewinds)).toBe(1);
    } finally {
      await bridge.stop();
    }
  });

  it('the database incarnation changes (meta rewritten, e.g. a re-created schema): cache reset', async () => {
    const bridge = await steppedBridge(testConfig(db, r), r, undefined, { identityCheckMs: 0 });
    try {
      const { users } = await world(db.sql, 3);
      await bridge.hydrate(users);
      await db.sql`update unread_sync.meta set value = gen_random_uuid()::text where key = 'incarnation'`;
      await bridge.drain();
      expect(await value(bridge.bridge.metrics.rewinds)).toBe(1);
      expect(await r.store.read(users[0]!)).toBeNull();
    } finally {
      await bridge.stop();
    }
  });

  it("pg_dump/pg_restore into a fresh database (another cluster's xids) with the same Redis prefix", async () => {
    const source = await createTestDb();
    const admin = inject('databaseUrl');
    const name = `usmove_${randomBytes(5).toString('hex')}`;
    const a = postgres(admin, { max: 1, onnotice: () => {} });
    await a.unsafe(`create database ${name}`);
    const targetUrl = withDatabase(admin, name);
    const target = postgres(targetUrl, { max: 4, onnotice: () => {} }) as unknown as Sql;
    const r2 = await createTestRedis();
    const file = `/tmp/${name}.dump`;
    try {
      const { users, rooms } = await world(source.sql, 10);
      const old = await steppedBridge(testConfig(source, r2), r2, undefined, { identityCheckMs: 0 });
      await old.hydrate(users);
      await source.sql`update chat_rooms set user_unread_count = 5 where id = any(${rooms})`;
      await old.drain();
      await old.stop();

      await run('pg_dump', ['-Fc', '--no-owner', '-f', file, '-d', source.url]);
      await run('pg_restore', ['--no-owner', '-d', targetUrl, file]);
      // On another cluster the dumped checkpoint's xids lie ahead of the new database's (forced
      // here, the test cluster being the same one), and the app writes before the bridge starts.
      await target`update unread_sync.bridge_state set snapshot = '4000000000:4000000000:'`;
      await target`update chat_rooms set user_unread_count = 8 where id = any(${rooms})`;

      const moved = await steppedBridge(testConfig({ ...source, url: targetUrl, sql: target, name }, r2), r2, undefined, {
        identityCheckMs: 0,
        verifyIntervalMs: 1,
      });
      try {
        await moved.drain();
        expect(await value(moved.bridge.metrics.rewinds)).toBe(1);
        await moved.hydrate(users);
        await target`update chat_rooms set user_unread_count = 9 where id = ${rooms[0]!}`;
        await moved.drain();
        expect((await r2.store.read(users[0]!))?.total).toBe(9);
        expect((await r2.store.read(users[1]!))?.total).toBe(8);
        await expectNoDrift(target, r2.store, users);
        expect(await value(moved.bridge.metrics.driftRepairs)).toBe(0);
        // The bridge is idle afterwards: nothing from the foreign checkpoint is read again.
        expect(await moved.bridge.runOnce()).toBe(0);
      } finally {
        await moved.stop();
      }
    } finally {
      await r2.cleanup();
      await target.end({ timeout: 5 });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
      await source.drop();
      await run('rm', ['-f', file]);
    }
  });
});
