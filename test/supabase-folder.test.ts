/**
 * supabase/ (Supabase CLI layout) must not drift from migrations/ (node-pg-migrate): one source
 * of truth. Also applies the Supabase copy plus seed.sql to real Postgres, with and without the
 * Realtime schema.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { differences } from '../scripts/supabase-migrations.js';
import { applyRealtimeShim } from './support/realtime-server.js';
import { createTestDb, truth, type TestDb } from './support/env.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const pgMigrations = `${root}migrations/`;
const sbMigrations = `${root}supabase/migrations/`;

const upSection = (text: string): string => {
  const start = text.indexOf('-- Up Migration\n');
  const end = text.indexOf('-- Down Migration');
  if (start < 0 || end < 0) throw new Error('not a node-pg-migrate SQL migration');
  return text.slice(start + '-- Up Migration\n'.length, end);
};
const nameOf = (file: string): string => file.replace(/^\d+_/, '').replace(/\.(sql|js)$/, '');
/** Statements of a SQL file, comments dropped, whitespace normalised. */
const statements = (text: string): string[] =>
  text
    .split('\n')
    .filter((l) => !l.trim().startsWith('--'))
    .join('\n')
    .split(';')
    .map((s) => s.replace(/\s+/g, ' ').trim())
    .filter(Boolean);

async function files() {
  const pg = (await readdir(pgMigrations)).filter((f) => /^\d+_.+\.(sql|js)$/.test(f)).sort();
  const sb = (await readdir(sbMigrations)).filter((f) => f.endsWith('.sql')).sort();
  return { pg, sb };
}

describe('supabase/ mirrors migrations/', () => {
  it('has one Supabase migration per node-pg-migrate migration, same names, same order, 14-digit versions', async () => {
    const { pg, sb } = await files();
    expect(sb.map(nameOf)).toEqual(pg.map(nameOf));
    for (const f of sb) expect(f, 'Supabase CLI versions are YYYYMMDDHHMMSS').toMatch(/^\d{14}_[a-z0-9-]+\.sql$/);
  });

  it('SQL migrations: the Supabase file is the Up section byte for byte (after its one-line header)', async () => {
    const { pg, sb } = await files();
    for (const f of pg.filter((x) => x.endsWith('.sql'))) {
      const up = upSection(await readFile(pgMigrations + f, 'utf8'));
      const copy = sb.find((s) => nameOf(s) === nameOf(f));
      const text = await readFile(sbMigrations + copy, 'utf8');
      const [header, ...rest] = text.split('\n');
      expect(header, `${copy} header`).toMatch(/^-- /);
      expect(
        rest.join('\n'),
        `supabase/migrations/${copy} differs from the Up section of migrations/${f}; regenerate it (npm run supabase:migrations)`,
      ).toBe(up);
    }
  });

  it('JS migrations: the Supabase file runs the same statements without CONCURRENTLY', async () => {
    const { pg, sb } = await files();
    for (const f of pg.filter((x) => x.endsWith('.js'))) {
      const mod = (await import(pathToFileURL(pgMigrations + f).href)) as { up: (pgm: unknown) => Promise<void> | void };
      const ran: string[] = [];
      await mod.up({ noTransaction: () => {}, db: { select: async () => [] }, sql: (s: string) => ran.push(s) });
      // Both sides through the same splitter: function bodies hold semicolons of their own.
      const expected = statements(ran.map((s) => s.replace(/ CONCURRENTLY/g, '')).join(';\n'));
      const copy = sb.find((s) => nameOf(s) === nameOf(f));
      expect(statements(await readFile(sbMigrations + copy, 'utf8'))).toEqual(expected);
    }
  });

  it('is exactly the output of npm run supabase:migrations', async () => {
    expect(await differences(), 'supabase/migrations/ is out of date: run npm run supabase:migrations').toEqual([]);
  });

  it('config.toml enables Realtime and the seed', async () => {
    const toml = await readFile(`${root}supabase/config.toml`, 'utf8');
    expect(toml).toMatch(/\[realtime\]\s*\nenabled = true/);
    expect(toml).toMatch(/sql_paths = \["\.\/seed\.sql"\]/);
  });
});

describe('applying supabase/migrations and seed.sql', () => {
  const dbs: TestDb[] = [];
  afterAll(async () => {
    await Promise.all(dbs.map((d) => d.drop()));
  });

  async function applyFolder(db: TestDb): Promise<void> {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      // Like the Supabase CLI: each file in its own transaction, in version order, then the seed.
      for (const f of (await files()).sb) {
        const text = await readFile(sbMigrations + f, 'utf8');
        await sql.begin((tx) => tx.unsafe(text));
      }
      await sql.unsafe(await readFile(`${root}supabase/seed.sql`, 'utf8'));
    } finally {
      await sql.end({ timeout: 5 });
    }
  }

  it('on a database with the Realtime schema: broadcast trigger, policies, demo badges', async () => {
    const db = await createTestDb({ migrate: false, prefix: 'sbfold' });
    dbs.push(db);
    await applyRealtimeShim(db.url);
    await db.sql`select realtime_shim.create_messages_partitions()`;
    await applyFolder(db);
    const t = await truth(db.sql);
    const total = (u: string) => Object.values(t[u] ?? {}).reduce((a, b) => a + b, 0);
    expect(total('11111111-1111-4111-8111-111111111111')).toBe(4);
    expect(total('22222222-2222-4222-8222-222222222222')).toBe(0); // its unread room is inactive
    expect(total('99999999-9999-4999-8999-999999999999')).toBe(8);
    const [row] = await db.sql<
      {
        trigger: boolean;
        rowTrigger: boolean;
        policies: number;
        logged: number;
        shards: number;
        bridgeSent: number;
        carried: number;
        userSent: number;
      }[]
    >`
      select exists (select 1 from pg_trigger where tgname = 'broadcast_transaction') as trigger,
             exists (select 1 from pg_trigger where tgname = 'broadcast_change') as "rowTrigger",
             (select count(*)::int from pg_policies where schemaname = 'realtime' and policyname like 'unread_sync%') as policies,
             (select count(*)::int from unread_sync.changes) as logged,
             (select count(distinct (hashtext(user_id::text) & 2147483647) % 4)::int from unread_sync.changes) as shards,
             (select count(*)::int from realtime.messages where topic like 'unread-sync:bridge:%') as "bridgeSent",
             (select coalesce(sum(jsonb_array_length(payload->'changes')), 0)::int from realtime.messages where topic like 'unread-sync:bridge:%') as carried,
             (select count(*)::int from realtime.messages where topic like 'unread-sync:user:%') as "userSent"`;
    // The seed is one transaction: one bridge message per shard it touched, carrying all 6 changes
    // (one per row before migration 0006). The deferred trigger reads meta at COMMIT, after the
    // seed switched per-user topics on: one message per user too.
    expect(row).toEqual({
      trigger: true,
      rowTrigger: false,
      policies: 3,
      logged: 6,
      shards: row!.shards,
      bridgeSent: row!.shards,
      carried: 6,
      userSent: 3,
    });
    expect(row!.shards).toBeLessThanOrEqual(3);
  });

  it('on plain Postgres: the Realtime parts are skipped, the change log works unchanged', async () => {
    const db = await createTestDb({ migrate: false, prefix: 'sbplain' });
    dbs.push(db);
    await applyFolder(db);
    const [row] = await db.sql<{ trigger: boolean; logged: number; fn: boolean }[]>`
      select exists (select 1 from pg_trigger where tgname = 'broadcast_change') as trigger,
             (select count(*)::int from unread_sync.changes) as logged,
             to_regprocedure('unread_sync.read_changes(pg_snapshot, pg_snapshot, xid8, bigint, uuid[], integer, text)') is not null as fn`;
    expect(row).toEqual({ trigger: false, logged: 6, fn: true });
  });
});
