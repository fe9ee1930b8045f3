import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { loadConfig, type Config } from '../../src/config.js';
import { createRedis, UnreadStore } from '../../src/store/store.js';
import type { TestDb } from '../support/env.js';
import { uuid } from '../support/env.js';
import { sleep } from '../../src/sleep.js';

export { sleep };

export interface ClusterRedis {
  prefix: string;
  redis: Cluster;
  store: UnreadStore;
  cleanup(): Promise<void>;
}

/** A cluster client built exactly as the bridge builds it (createRedis with seed nodes). */
export function clusterRedis(seeds: string, prefix = `t${randomBytes(4).toString('hex')}:`): ClusterRedis {
  const redis = createRedis('redis://unused', { clusterNodes: seeds.split(',') });
  if (!(redis instanceof Cluster)) throw new Error('createRedis did not build a Cluster client');
  redis.on('error', () => {}); // node errors during a failover are expected; commands report their own
  const store = new UnreadStore(redis, prefix, { tombstoneTtlMs: 600_000, deadLetterMax: 100 });
  return {
    prefix,
    redis,
    store,
    async cleanup() {
      redis.disconnect();
    },
  };
}

/** Bridge config against the cluster: fast polling and checkpoints so waits stay short. */
export function clusterConfig(db: TestDb, seeds: string, prefix: string, extra: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: db.url,
    REDIS_URL: 'redis://127.0.0.1:6379',
    REDIS_CLUSTER_NODES: seeds,
    UNREAD_KEY_PREFIX: prefix,
    UNREAD_POLL_INTERVAL_MS: '50',
    UNREAD_CHECKPOINT_INTERVAL_MS: '0',
    UNREAD_METRICS_PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...extra,
  });
}

/**
 * A probe: one room bumped every `everyMs` so that "time until the next applied change" can be
 * measured from Redis (its user's seq moves on each applied change).
 */
export async function probe(db: TestDb, store: UnreadStore, everyMs = 5) {
  const user = uuid();
  const room = uuid();
  await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
               values (${room}, ${user}, ${uuid()}, 0, 0)`;
  let running = true;
  const writer = (async () => {
    while (running) {
      await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${room}`;
      await sleep(everyMs);
    }
  })();
  return {
    user,
    room,
    /**
     * Ms from `since` until Redis holds a probe value committed after this call: the next change
     * committed after a kill has been applied. Redis errors (a failover) count as "not yet".
     */
    async nextApplied(since: number, timeoutMs = 60_000): Promise<number> {
      const [row] = await db.sql<{ n: number }[]>`select user_unread_count as n from chat_rooms where id = ${room}`;
      const committed = row?.n ?? 0;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const cached = await store.read(user).catch(() => null);
        if ((cached?.rooms[room] ?? -1) > committed) return Date.now() - since;
        if (Date.now() > deadline) throw new Error(`no change applied within ${timeoutMs} ms`);
        await sleep(5);
      }
    },
    async stop() {
      running = false;
      await writer;
    },
  };
}

/** Percentile of a list of numbers (nearest rank). */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}
