import { randomBytes, randomUUID } from 'node:crypto';
import { expect, inject } from 'vitest';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { migrate } from '../../src/migrate.js';
import { loadConfig, type Config } from '../../src/config.js';
import { queries, type Sql } from '../../src/db.js';
import { UnreadStore } from '../../src/store/store.js';
import { createLogger } from '../../src/log.js';
import { deletePrefix } from './redis-keys.js';

export { deletePrefix };

export const uuid = (): string => randomUUID();

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export interface TestDb {
  url: string;
  name: string;
  sql: Sql;
  drop(): Promise<void>;
}

export interface DbOptions {
  /** Apply the migrations (default true). */
  migrate?: boolean;
  /** Database name prefix (default "us"), to tell whose leftovers are whose. */
  prefix?: string;
}

/**
 * A database for one test file, planned but not created yet: its name, URL and (lazy, not yet
 * connected) client are known at once, `create()` makes it. useEnv() hands these out at collect time.
 */
export function planTestDb(options: DbOptions = {}): TestDb & { create(): Promise<void> } {
  const admin = inject('databaseUrl');
  const name = `${options.prefix ?? 'us'}_${randomBytes(5).toString('hex')}`;
  const url = withDatabase(admin, name);
  const sql = postgres(url, { max: 8, onnotice: () => {} }) as unknown as Sql;
  return {
    url,
    name,
    sql,
    async create() {
      const adminSql = postgres(admin, { max: 1, onnotice: () => {} });
      try {
        await adminSql.unsafe(`create database ${name}`);
      } finally {
        await adminSql.end();
      }
      if (options.migrate !== false) await migrate({ databaseUrl: url, direction: 'up' });
    },
    async drop() {
      await sql.end({ timeout: 5 });
      const a = postgres(admin, { max: 1, onnotice: () => {} });
      try {
        // WITH (FORCE) does not end walsenders: a bridge killed while its temporary slot was
        // being created leaves one waiting for running transactions (the slot goes with it).
        for (let attempt = 0; ; attempt++) {
          await a`select pg_terminate_backend(active_pid) from pg_replication_slots where database = ${name} and active_pid is not null`;
          try {
            await a.unsafe(`drop database if exists ${name} with (force)`);
            break;
          } catch (err) {
            if (attempt >= 50 || !/replication slot/.test((err as Error).message)) throw err;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        }
      } finally {
        await a.end();
      }
    },
  };
}

/** A fresh database for one test file; migrated unless asked not to. */
export async function createTestDb(options: DbOptions = {}): Promise<TestDb> {
  const { create, ...db } = planTestDb(options);
  await create();
  return db;
}

export interface TestRedis {
  url: string;
  prefix: string;
  redis: Redis;
  store: UnreadStore;
  cleanup(): Promise<void>;
}

/**
 * A Redis connection with a key prefix of its own, so test files never see each other's keys.
 * Connects on its first command; `cleanup()` deletes the prefix's keys and disconnects.
 */
export function openTestRedis(options: { db?: number } = {}): TestRedis {
  const base = new URL(inject('redisUrl'));
  if (options.db !== undefined) base.pathname = `/${options.db}`;
  const url = base.toString();
  const prefix = `t${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(url, { enableAutoPipelining: true, lazyConnect: true });
  const store = new UnreadStore(redis, prefix, { tombstoneTtlMs: 600_000, deadLetterMax: 100 });
  return {
    url,
    prefix,
    redis,
    store,
    async cleanup() {
      await deletePrefix(redis, prefix);
      redis.disconnect();
    },
  };
}

/** openTestRedis, as a promise (the older spelling). */
export async function createTestRedis(options: { db?: number } = {}): Promise<TestRedis> {
  return openTestRedis(options);
}

/** Config for a bridge under test: fast polling and checkpoints so waits stay short. */
export function testConfig(db: TestDb, r: TestRedis, extra: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: db.url,
    REDIS_URL: r.url,
    UNREAD_KEY_PREFIX: r.prefix,
    UNREAD_POLL_INTERVAL_MS: '50',
    UNREAD_CHECKPOINT_INTERVAL_MS: '0',
    UNREAD_METRICS_PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...extra,
  });
}

export const testLogger = () => createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');

/** Waits until the bridge has applied everything committed before this call. */
export async function waitForBridge(sql: Sql, bridgeName = 'default', timeoutMs = 60_000): Promise<void> {
  const snapshot = await queries.currentSnapshot(sql);
  const deadline = Date.now() + timeoutMs;
  while (!(await queries.bridgeHasReached(sql, bridgeName, snapshot))) {
    if (Date.now() > deadline) throw new Error(`bridge did not reach ${snapshot} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Truth {
  [userId: string]: Record<string, number>;
}

/** Per-user rooms with unread > 0, computed by SQL from chat_rooms (the definition of correct). */
export async function truth(sql: Sql): Promise<Truth> {
  const rows = await sql<{ user_id: string; room_id: string; unread: number }[]>`
    select user_id, room_id, unread from unread_sync.unread_truth`;
  const byUser = new Map<string, Array<[string, number]>>();
  for (const r of rows) {
    let rooms = byUser.get(r.user_id);
    if (!rooms) byUser.set(r.user_id, (rooms = []));
    rooms.push([r.room_id, r.unread]);
  }
  // fromEntries defines own properties: a text room id like "__proto__" is a key like any other
  // (an assignment would set the object's prototype instead and drop the room).
  return Object.fromEntries([...byUser].map(([u, rooms]) => [u, Object.fromEntries(rooms)]));
}

/** Users whose cached badge differs from the truth (users not cached are unknown, not drift). */
export async function drifted(sql: Sql, store: UnreadStore, users: string[]): Promise<string[]> {
  const t = await truth(sql);
  const bad: string[] = [];
  for (const u of users) {
    const cached = await store.read(u);
    if (!cached) continue;
    const expected = t[u] ?? {};
    const sum = Object.values(expected).reduce((a, b) => a + b, 0);
    const same =
      cached.total === sum &&
      cached.unreadRooms === Object.keys(expected).length &&
      JSON.stringify(Object.entries(cached.rooms).sort()) === JSON.stringify(Object.entries(expected).sort());
    if (!same) bad.push(u);
  }
  return bad;
}

/** Asserts that no user's cached badge differs from the truth computed by SQL (uncached users are not drift). */
export async function expectNoDrift(sql: Sql, store: UnreadStore, users: string[]): Promise<void> {
  expect(await drifted(sql, store, users), 'users whose cached badge differs from the truth').toEqual([]);
}

/**
 * Re-enables every capture trigger on chat_rooms the way the migration installs them: ENABLE
 * ALWAYS (PostgreSQL has no ALWAYS form of `ENABLE TRIGGER ALL`, so each is named).
 */
export async function enableCapture(sql: Sql): Promise<void> {
  const rows = await sql<{ stmt: string }[]>`
    select format('alter table public.chat_rooms enable always trigger %I', t.tgname) as stmt
      from pg_trigger t
      join pg_proc p on p.oid = t.tgfoid join pg_namespace n on n.oid = p.pronamespace
     where t.tgrelid = 'public.chat_rooms'::regclass and n.nspname = 'unread_sync' and not t.tgisinternal`;
  for (const r of rows) await sql.unsafe(r.stmt);
}
