import { afterAll, beforeAll } from 'vitest';
import type { BridgeOptions } from '../../src/bridge/bridge.js';
import type { Config } from '../../src/config.js';
import { steppedBridge, type SteppedBridge } from './bridge.js';
import { expectNoDrift, openTestRedis, planTestDb, testConfig, type DbOptions, type TestDb, type TestRedis } from './env.js';

export interface EnvOptions {
  /** The database: createTestDb options (default: a fresh migrated one). */
  db?: DbOptions;
  /** Redis: a logical database of its own (default: the shared one, with a key prefix of its own). */
  redis?: { db?: number };
}

export interface Env {
  /** A fresh database (created in beforeAll, dropped in afterAll). */
  db: TestDb;
  /** A Redis client, store and key prefix (its keys deleted and the client closed in afterAll). */
  r: TestRedis;
  /** testConfig(db, r, extra): a bridge config on this env with fast polling and checkpoints. */
  config(extra?: Record<string, string>): Config;
  /** A bridge driven step by step on this env (support/bridge.ts), stopped in afterAll unless stopped before. */
  steppedBridge(config?: Config, interceptor?: (rows: unknown[]) => unknown[], extra?: Partial<BridgeOptions>): Promise<SteppedBridge>;
  /** Registers a teardown; teardowns run in reverse order in afterAll, before Redis and the database go. */
  defer(teardown: () => unknown): void;
  /** expectNoDrift(db.sql, r.store, users): no cached badge differs from the truth computed by SQL. */
  expectNoDrift(users: string[]): Promise<void>;
}

/** Only a database (created in beforeAll, dropped in afterAll), for files that need no Redis. */
export function useDb(options: DbOptions = {}): TestDb {
  const { create, ...db } = planTestDb(options);
  beforeAll(() => create());
  afterAll(() => db.drop()); // `drop database if exists`: also after a failed create
  return db;
}

/** Only Redis: a client, store and key prefix of its own; its keys deleted and the client closed in afterAll. */
export function useRedis(options: { db?: number } = {}): TestRedis {
  const r = openTestRedis(options);
  afterAll(() => r.cleanup());
  return r;
}

/**
 * The shared test fixture: call it at the top of a file or a describe block. `db` and `r` exist at
 * once (names, URLs, clients that connect on first use), so `const { db, r } = useEnv()` reads like
 * the variables tests used before; the database is created (and migrated) in beforeAll, and afterAll
 * runs the deferred teardowns, deletes the Redis prefix and drops the database, even when a test or
 * a later beforeAll failed.
 */
export function useEnv(options: EnvOptions = {}): Env {
  const { create, ...db } = planTestDb(options.db);
  const r = openTestRedis(options.redis);
  const teardowns: Array<() => unknown> = [];

  beforeAll(() => create());
  afterAll(async () => {
    const errors: unknown[] = [];
    for (const teardown of teardowns.splice(0).reverse()) {
      try {
        await teardown();
      } catch (err) {
        errors.push(err);
      }
    }
    try {
      await r.cleanup();
    } finally {
      await db.drop(); // `drop database if exists`: also after a failed create
    }
    if (errors.length > 0) throw errors[0];
  });

  const env: Env = {
    db,
    r,
    config: (extra = {}) => testConfig(db, r, extra),
    async steppedBridge(config = testConfig(db, r), interceptor, extra = {}) {
      const stepper = await steppedBridge(config, r, interceptor, extra);
      let stopped = false;
      const stop = stepper.stop;
      stepper.stop = async () => {
        if (stopped) return;
        stopped = true;
        await stop();
      };
      env.defer(stepper.stop);
      return stepper;
    },
    defer(teardown) {
      teardowns.push(teardown);
    },
    expectNoDrift: (users) => expectNoDrift(db.sql, r.store, users),
  };
  return env;
}
