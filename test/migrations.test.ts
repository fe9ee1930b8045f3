import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, MIGRATIONS_DIR } from '../src/migrate.js';
import { createTestDb, uuid, type TestDb } from './support/env.js';

/** Every migration file; counted rather than hard-coded, so adding a migration needs no edit here. */
const MIGRATIONS = readdirSync(MIGRATIONS_DIR)
  .filter((f) => /^\d+_.+\.(sql|js)$/.test(f))
  .sort();
/** Migrations from the index migration (0001) on: `down` this many leaves only the core. */
/** Capture triggers on chat_rooms: insert/delete, update (no column list), truncate. */
const TRIGGERS = 3;
const FROM_INDEXES = MIGRATIONS.length - MIGRATIONS.findIndex((f) => f.includes('chat-rooms-indexes'));

async function objects(db: TestDb) {
  const [row] = await db.sql<{ schema: boolean; table: boolean; triggers: number; indexes: number; migrations: number }[]>`
    select exists (select 1 from pg_namespace where nspname = 'unread_sync') as schema,
           to_regclass('public.chat_rooms') is not null as table,
           (select count(*)::int from pg_trigger where tgname like 'unread_sync%') as triggers,
           (select count(*)::int from pg_class where relname like 'unread_sync_chat_rooms_%_idx') as indexes,
           (select count(*)::int from unread_sync_migrations) as migrations`;
  return row;
}

describe('migrations: up, down, up again', () => {
  let empty: TestDb;
  let live: TestDb;
  beforeAll(async () => {
    [empty, live] = await Promise.all([createTestDb({ migrate: false }), createTestDb({ migrate: false })]);
  });
  afterAll(async () => {
    await Promise.all([empty?.drop(), live?.drop()]);
  });

  it('on an empty database: creates a minimal chat_rooms, and down removes everything it added', async () => {
    await migrate({ databaseUrl: empty.url, direction: 'up' });
    expect(await objects(empty)).toEqual({ schema: true, table: true, triggers: TRIGGERS, indexes: 2, migrations: MIGRATIONS.length });
    const cols = await empty.sql<{ column_name: string }[]>`
      select column_name from information_schema.columns where table_name = 'chat_rooms' order by ordinal_position`;
    expect(cols.map((c) => c.column_name)).toEqual([
      'id',
      'user_id',
      'company_id',
      'user_unread_count',
      'company_unread_count',
      'is_active',
      'created_at',
      'updated_at',
    ]);
    await migrate({ databaseUrl: empty.url, direction: 'down' });
    expect(await objects(empty)).toEqual({ schema: false, table: false, triggers: 0, indexes: 0, migrations: 0 });
    await migrate({ databaseUrl: empty.url, direction: 'up' });
    expect(await objects(empty)).toMatchObject({ schema: true, table: true, triggers: TRIGGERS });
  });

  it('on a database with the app’s chat_rooms and live rows: keeps the table and every row, both ways', async () => {
    await live.sql`
      create table chat_rooms (
        id uuid primary key, user_id uuid, company_id uuid, user_unread_count int, company_unread_count int,
        is_active boolean, last_message text, created_at timestamptz default now())`;
    const rows = Array.from({ length: 500 }, (_, i) => ({
      id: uuid(),
      user_id: uuid(),
      company_id: uuid(),
      user_unread_count: i % 7,
      company_unread_count: i % 3,
      is_active: i % 5 !== 0,
      last_message: `m${i}`,
    }));
    await live.sql`insert into chat_rooms ${live.sql(rows)}`;
    const fingerprint = () => live.sql`select md5(string_agg(t::text, ',' order by id)) as h from chat_rooms t`;
    const before = await fingerprint();

    await migrate({ databaseUrl: live.url, direction: 'up' });
    expect(await objects(live)).toEqual({ schema: true, table: true, triggers: TRIGGERS, indexes: 2, migrations: MIGRATIONS.length });
    expect(await fingerprint()).toEqual(before);
    // Existing rows are the truth from the start; the triggers see new writes.
    const [truth] = await live.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.unread_truth`;
    expect(truth?.n).toBeGreaterThan(0);
    await live.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${rows[1]!.id}`;
    const [logged] = await live.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes`;
    expect(logged?.n).toBe(1);

    await migrate({ databaseUrl: live.url, direction: 'down' });
    expect(await objects(live)).toEqual({ schema: false, table: true, triggers: 0, indexes: 0, migrations: 0 });
    const [after] = await live.sql<{ n: number }[]>`select count(*)::int as n from chat_rooms`;
    expect(after?.n).toBe(500);
    await migrate({ databaseUrl: live.url, direction: 'up' });
    expect(await objects(live)).toMatchObject({ schema: true, table: true, triggers: TRIGGERS, indexes: 2 });
  });

  it('down keeps a chat_rooms it created once the app has put rows in it', async () => {
    const db = await createTestDb({ migrate: false });
    try {
      await migrate({ databaseUrl: db.url, direction: 'up' });
      await db.sql`insert into chat_rooms (user_id, company_id, user_unread_count) values (${uuid()}, ${uuid()}, 1)`;
      await migrate({ databaseUrl: db.url, direction: 'down' });
      const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from chat_rooms`;
      expect(row?.n).toBe(1);
    } finally {
      await db.drop();
    }
  });

  it('rebuilds an index a failed concurrent build left INVALID', async () => {
    const db = await createTestDb();
    try {
      // Simulate the leftover of an interrupted CREATE INDEX CONCURRENTLY.
      await db.sql`update pg_index set indisvalid = false where indexrelid = 'unread_sync_chat_rooms_user_id_idx'::regclass`;
      await migrate({ databaseUrl: db.url, direction: 'down', count: FROM_INDEXES });
      await db.sql`create index unread_sync_chat_rooms_user_id_idx on chat_rooms (user_id)`;
      await db.sql`update pg_index set indisvalid = false where indexrelid = 'unread_sync_chat_rooms_user_id_idx'::regclass`;
      await migrate({ databaseUrl: db.url, direction: 'up' });
      const [row] = await db.sql<{ valid: boolean }[]>`
        select indisvalid as valid from pg_index where indexrelid = 'unread_sync_chat_rooms_user_id_idx'::regclass`;
      expect(row?.valid).toBe(true);
    } finally {
      await db.drop();
    }
  });
});
