/**
 * Issue 10, case 9 without superuser rights: the migration cannot create its DDL event trigger, so
 * the bridge runs unread_sync.sync_partitions() on start and every identity check. A partition
 * created after `migrate up` (then truncated) and a filled table attached as a partition end with
 * 0 wrong users, with no manual step and no repair by the periodic verifier.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { inject } from 'vitest';
import { migrate } from '../src/migrate.js';
import type { Sql } from '../src/db.js';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge } from '../src/launch.js';
import { createTestRedis, expectNoDrift, testConfig, testLogger, uuid, waitForBridge, withDatabase, type TestDb } from './support/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A database owned by a fresh LOGIN role without superuser, and a connection as that role. */
async function unprivilegedDb(): Promise<TestDb & { role: string }> {
  const admin = inject('databaseUrl');
  const suffix = randomBytes(5).toString('hex');
  const [name, role] = [`pu_${suffix}`, `pu_role_${suffix}`];
  const a = postgres(admin, { max: 1, onnotice: () => {} });
  await a.unsafe(`create role ${role} login nosuperuser nocreatedb nocreaterole`);
  await a.unsafe(`create database ${name} owner ${role}`);
  await a.end();
  const u = new URL(withDatabase(admin, name));
  u.username = role;
  u.password = '';
  const url = u.toString();
  const sql = postgres(url, { max: 6, onnotice: () => {} }) as unknown as Sql;
  return {
    url,
    name,
    role,
    sql,
    async drop() {
      await sql.end({ timeout: 5 });
      const b = postgres(admin, { max: 1, onnotice: () => {} });
      await b.unsafe(`drop database if exists ${name} with (force)`);
      await b.unsafe(`drop role if exists ${role}`);
      await b.end();
    },
  };
}

describe('partitions of chat_rooms without superuser rights', () => {
  it('a partition created after migrate, truncated, and a filled table attached: 0 wrong users, no manual step', async () => {
    const db = await unprivilegedDb();
    const r = await createTestRedis();
    cleanups.push(async () => {
      await r.cleanup();
      await db.drop();
    });
    const [me] = await db.sql<{ su: boolean }[]>`select rolsuper as su from pg_roles where rolname = current_user`;
    expect(me?.su).toBe(false);
    await db.sql.unsafe(`
      create table chat_rooms (
        id uuid not null, user_id uuid, company_id uuid, user_unread_count int default 0,
        company_unread_count int default 0, is_active boolean default true, region text not null default 'eu',
        primary key (id, region)) partition by list (region);
      create table chat_rooms_eu partition of chat_rooms for values in ('eu');`);
    await migrate({ databaseUrl: db.url, direction: 'up' });
    const [events] = await db.sql<{ n: number }[]>`select count(*)::int as n from pg_event_trigger where evtname like 'unread_sync%'`;
    expect(events?.n).toBe(0); // no superuser: no DDL event trigger to rely on

    const users = Array.from({ length: 6 }, () => uuid());
    const room = (i: number, region: string, unread: number) => ({
      id: uuid(),
      user_id: users[i % users.length]!,
      company_id: users[(i + 1) % users.length]!,
      user_unread_count: unread,
      company_unread_count: 1,
      region,
    });
    await db.sql`insert into chat_rooms ${db.sql(Array.from({ length: 30 }, (_, i) => room(i, 'eu', i % 4)))}`;

    const running = startBridge(testConfig(db, r, { UNREAD_DB_CHECK_INTERVAL_MS: '100', UNREAD_VERIFY_INTERVAL_MS: '100' }), testLogger(), {
      redis: r.redis,
    });
    cleanups.push(() => running.stop());
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 20_000 });
    const readAll = () => Promise.all(users.map((u) => reader.getTotal(u)));
    await readAll();
    const syncs = async () => (await running.bridge.metrics.partitionSyncs.get()).values[0]?.value ?? 0;
    const waitSyncs = async (n: number) => {
      for (let i = 0; i < 200 && (await syncs()) < n; i++) await new Promise((res) => setTimeout(res, 50));
      expect(await syncs()).toBeGreaterThanOrEqual(n);
    };

    // 1. A partition created later, by the app (no event trigger ran): the bridge gives it capture.
    await db.sql`create table chat_rooms_ap partition of chat_rooms for values in ('ap')`;
    await waitSyncs(1);
    const [trig] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_trigger where tgrelid = 'chat_rooms_ap'::regclass and tgenabled = 'A'`;
    expect(trig?.n).toBe(3);
    await db.sql`insert into chat_rooms ${db.sql(Array.from({ length: 12 }, (_, i) => room(i, 'ap', 5)))}`;
    await db.sql`update chat_rooms set region = 'ap', user_unread_count = user_unread_count + 2 where region = 'eu' and user_unread_count = 1`;
    await waitForBridge(db.sql);
    await readAll();
    await expectNoDrift(db.sql, r.store, users);
    // ... so its TRUNCATE is captured (before, this left every user of those rooms too high).
    await db.sql`truncate chat_rooms_ap`;
    await waitForBridge(db.sql);
    await readAll();
    await waitForBridge(db.sql);
    await expectNoDrift(db.sql, r.store, users);

    // 2. A table filled outside chat_rooms, attached: no row trigger saw its rows.
    await db.sql.unsafe(`create table chat_rooms_sa (like chat_rooms including defaults)`);
    await db.sql`insert into chat_rooms_sa ${db.sql(Array.from({ length: 12 }, (_, i) => room(i, 'sa', 7)))}`;
    await db.sql`alter table chat_rooms attach partition chat_rooms_sa for values in ('sa')`;
    await waitSyncs(2);
    await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where region = 'sa'`;
    await waitForBridge(db.sql);
    await readAll();
    await waitForBridge(db.sql);
    await expectNoDrift(db.sql, r.store, users);
    const cached = (await Promise.all(users.map((u) => r.store.read(u)))).filter(Boolean).length;
    expect(cached).toBe(users.length);
    expect((await running.bridge.metrics.driftRepairs.get()).values[0]?.value ?? 0).toBe(0);
  });
});
