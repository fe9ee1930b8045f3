import postgres from 'postgres';
import { migrate } from '../src/migrate.js';
import type { Sql } from '../src/db.js';

export interface DatasetSize {
  users: number;
  rooms: number;
}

export interface Dataset extends DatasetSize {
  url: string;
  sql: Sql;
  /** Individual users are idx [0, individuals), companies [individuals, users). */
  individuals: number;
  loadSeconds: number;
  reused: boolean;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** The same deterministic id the SQL below computes, so JS can name users without a query. */
export const userIdSql = (idxExpr: string) => `md5('bench-user-' || (${idxExpr})::text)::uuid`;

/**
 * Creates (or reuses) the bench database: migrations, then users and rooms in bulk with the
 * capture trigger disabled (a bulk load must not fill the change log), then the trigger back on.
 * Skew: user_id ~ n*r^2 (a few users with thousands of rooms, most with a handful);
 * company_id ~ 10% of users, also r^2 (companies have many rooms each).
 */
export async function prepareDataset(
  adminUrl: string,
  dbName: string,
  size: DatasetSize,
  options: { reuse: boolean; log: (m: string) => void },
): Promise<Dataset> {
  const t0 = Date.now();
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  const url = withDatabase(adminUrl, dbName);
  const individuals = Math.max(1, Math.floor(size.users * 0.9));
  const companies = Math.max(1, size.users - individuals);
  let reused = false;
  try {
    const exists = await admin`select 1 from pg_database where datname = ${dbName}`;
    if (exists.length > 0 && options.reuse) {
      const probe = postgres(url, { max: 1, onnotice: () => {} });
      try {
        const [meta] = await probe<{ users: number; rooms: number }[]>`
          select users, rooms from bench_meta limit 1`.catch(() => [] as { users: number; rooms: number }[]);
        reused = meta?.users === size.users && meta?.rooms === size.rooms;
      } finally {
        await probe.end();
      }
    }
    if (!reused) {
      await admin.unsafe(`drop database if exists ${dbName} with (force)`);
      await admin.unsafe(`create database ${dbName}`);
    }
  } finally {
    await admin.end();
  }

  const sql = postgres(url, { max: 40, onnotice: () => {}, types: {} }) as unknown as Sql;
  if (!reused) {
    await migrate({ databaseUrl: url, direction: 'up' });
    options.log(`  migrated ${dbName}; loading ${size.users} users / ${size.rooms} rooms`);
    await sql.unsafe(`
      create table bench_users (idx int primary key, id uuid not null unique, company boolean not null);
      insert into bench_users
        select i, ${userIdSql('i')}, i >= ${individuals} from generate_series(0, ${size.users - 1}) i;`);
    // Bulk load without the capture trigger; it is re-enabled before anything is measured.
    await sql.unsafe(`alter table chat_rooms disable trigger unread_sync_capture`);
    await sql.unsafe(`
      insert into chat_rooms (user_id, company_id, user_unread_count, company_unread_count, is_active)
      select ${userIdSql(`floor(${individuals} * power(random(), 2))::int`)},
             ${userIdSql(`${individuals} + floor(${companies} * power(random(), 2))::int`)},
             case when random() < 0.3 then 1 + floor(random() * 20)::int else 0 end,
             case when random() < 0.3 then 1 + floor(random() * 20)::int else 0 end,
             random() < 0.9
        from generate_series(1, ${size.rooms})`);
    await sql.unsafe(`alter table chat_rooms enable always trigger unread_sync_capture`);
    await sql.unsafe(`analyze chat_rooms; analyze bench_users`);
    await sql.unsafe(`create table bench_meta (users int, rooms int); insert into bench_meta values (${size.users}, ${size.rooms})`);
  } else {
    options.log(`  reusing ${dbName} (${size.users} users / ${size.rooms} rooms); clearing bridge state`);
    await sql.unsafe(`alter table chat_rooms enable always trigger unread_sync_capture`);
    await sql.unsafe(`vacuum analyze chat_rooms`);
  }
  // Every run starts with no bridge position and an empty log: the first bridge start resets.
  await sql.unsafe(`delete from unread_sync.bridge_state; truncate unread_sync.changes;
                    delete from unread_sync.meta where key = 'pruned_unapplied_xid'`);
  return { ...size, url, sql, individuals, loadSeconds: (Date.now() - t0) / 1000, reused };
}

/** All user ids, in idx order. */
export async function allUserIds(sql: Sql): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id::text as id from bench_users order by idx`;
  return rows.map((r) => r.id);
}
