import { readdirSync } from 'node:fs';
import { MIGRATIONS_DIR } from '../src/migrate.js';
import { beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { migrate, MigrationLockError } from '../src/migrate.js';
import { createTestDb, uuid, type TestDb } from './support/env.js';
import { useDb } from './support/fixture.js';

/** An app-shaped chat_rooms with live rows, before unread-sync is installed. */
async function appTable(db: TestDb, rows: number): Promise<string[]> {
  await db.sql`
    create table chat_rooms (
      id uuid primary key, user_id uuid, company_id uuid, user_unread_count int, company_unread_count int,
      is_active boolean default true)`;
  const ids = Array.from({ length: rows }, () => uuid());
  for (let i = 0; i < ids.length; i += 1000) {
    const page = ids
      .slice(i, i + 1000)
      .map((id, j) => ({ id, user_id: uuid(), company_id: uuid(), user_unread_count: j % 5, company_unread_count: 0 }));
    await db.sql`insert into chat_rooms ${db.sql(page)}`;
  }
  return ids;
}

/** Holds a row lock of chat_rooms in an open transaction, like a slow app request. */
async function holdRow(db: TestDb, id: string) {
  const conn = postgres(db.url, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const tx = conn.begin(async (t) => {
    await t`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
    locked();
    await released;
  });
  await isLocked;
  return {
    commit: async () => {
      release();
      await tx;
      await conn.end();
    },
  };
}

/** Writes other rows in a loop from its own connection; records each write's latency. */
function writer(db: TestDb, ids: string[]) {
  const conn = postgres(db.url, { max: 1, onnotice: () => {} });
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    let i = 0;
    while (running) {
      const started = Date.now();
      await conn`update chat_rooms set company_unread_count = company_unread_count + 1 where id = ${ids[1 + (i++ % (ids.length - 1))]!}`;
      latencies.push(Date.now() - started);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    latencies,
    stop: async () => {
      running = false;
      await loop;
      await conn.end();
    },
  };
}

describe('migrations never freeze app writes (lock_timeout + bounded retries)', () => {
  const db = useDb({ migrate: false });
  let ids: string[];
  beforeAll(async () => {
    ids = await appTable(db, 5_000);
  });

  it('gives up clearly after its retries while an app transaction holds a row, and changes nothing', async () => {
    const holder = await holdRow(db, ids[0]!);
    const lines: string[] = [];
    try {
      const err = await migrate({ databaseUrl: db.url, direction: 'up', lockTimeoutMs: 200, retries: 2, log: (m) => lines.push(m) }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(MigrationLockError);
      expect((err as Error).message).toMatch(/gave up after 3 attempts: each waited 200 ms for a lock/);
      expect(lines.filter((l) => l.includes('rolled back, retry'))).toHaveLength(2);
      const [row] = await db.sql<{ schema: boolean; triggers: number }[]>`
        select exists (select 1 from pg_namespace where nspname = 'unread_sync') as schema,
               (select count(*)::int from pg_trigger where tgname like 'unread_sync%') as triggers`;
      expect(row).toEqual({ schema: false, triggers: 0 });
    } finally {
      await holder.commit();
    }
  });

  it('writes to chat_rooms keep going while migrate up waits, and it succeeds once the holder commits', async () => {
    const holdMs = 4_000;
    const holder = await holdRow(db, ids[0]!);
    const w = writer(db, ids);
    const lines: string[] = [];
    const started = Date.now();
    const migrating = migrate({ databaseUrl: db.url, direction: 'up', lockTimeoutMs: 300, retries: 20, log: (m) => lines.push(m) });
    await new Promise((r) => setTimeout(r, holdMs));
    const duringHold = w.latencies.length;
    const worstDuringHold = Math.max(...w.latencies);
    await holder.commit();
    const ran = await Promise.race([
      migrating,
      new Promise<string[]>((_, rej) => setTimeout(() => rej(new Error(`migrate still waiting: ${lines.join(' | ')}`)), 60_000)),
    ]);
    await w.stop();
    // Without lock_timeout every write would queue behind CREATE TRIGGER for the whole hold (4 s).
    // With it a write waits at most about one lock_timeout; 2 s leaves room for a loaded machine.
    console.log(
      `writes during a ${holdMs} ms hold: ${duringHold}, worst ${worstDuringHold} ms; migrated after ${Date.now() - started} ms, ${lines.filter((l) => l.includes('retry')).length} retries`,
    );
    expect(duringHold).toBeGreaterThan(10);
    expect(worstDuringHold).toBeLessThan(holdMs / 2);
    expect(lines.some((l) => l.includes('rolled back, retry'))).toBe(true);
    expect(ran).toContain('1764000000000_unread-sync-core');
    const [row] = await db.sql<{ triggers: number }[]>`select count(*)::int as triggers from pg_trigger where tgname like 'unread_sync%'`;
    // insert/delete, update (no column list), truncate: see migration 1764000000003
    expect(row?.triggers).toBe(3);
  });
});

describe('pendingMigrations (what a bridge waits for)', () => {
  it('all on a fresh database, none when migrated, none when another tool installed the schema', async () => {
    const { pendingMigrations } = await import('../src/migrate.js');
    const fresh = await createTestDb({ migrate: false });
    const done = await createTestDb();
    try {
      const shipped = readdirSync(MIGRATIONS_DIR)
        .filter((f) => /^\d+_.+\.(sql|js)$/.test(f))
        .map((f) => f.replace(/\.(sql|js)$/, ''))
        .sort();
      expect(shipped.length).toBeGreaterThanOrEqual(3);
      expect(await pendingMigrations(fresh.url)).toEqual(shipped);
      expect(await pendingMigrations(done.url)).toEqual([]);
      await done.sql`delete from unread_sync_migrations where name = '1764000000002_realtime-broadcast'`;
      expect(await pendingMigrations(done.url)).toEqual(['1764000000002_realtime-broadcast']);
      // The Supabase CLI records its migrations elsewhere: the schema itself is the evidence.
      await done.sql`drop table unread_sync_migrations`;
      expect(await pendingMigrations(done.url)).toEqual([]);
    } finally {
      await fresh.drop();
      await done.drop();
    }
  });
});
