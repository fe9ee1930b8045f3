import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../src/config.js';
import { queries, type Sql } from '../src/db.js';
import type { Logger } from '../src/log.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { UnreadStore } from '../src/store/store.js';
import type { Dataset } from './dataset.js';
import { sleep } from './lib.js';
import { deletePrefix } from '../test/support/redis-keys.js';

export interface BenchOptions {
  users: number;
  rooms: number;
  durationMs: number;
  quick: boolean;
  out: string;
  svg: string;
  drainChanges: number;
  reuse: boolean;
  only: Set<string> | null;
  /** Bench database (created and dropped by the bench) and Redis key prefix: two benches on one server need their own. */
  db: string;
  prefix: string;
  /** README whose `<!-- bench:begin -->` ... `<!-- bench:end -->` block gets this run's tables. */
  readme: string | null;
}

/** Shared state of one bench run. */
export class BenchContext {
  readonly prefix: string;
  readonly redis: Redis;
  readonly store: UnreadStore;
  bridge: RunningBridge | null = null;
  /** Failed bridge cycles over the run: non-zero means something killed connections mid-run. */
  bridgeErrors = 0;

  constructor(
    readonly opts: BenchOptions,
    readonly ds: Dataset,
    readonly redisUrl: string,
    readonly log: Logger,
    readonly users: string[],
  ) {
    this.prefix = opts.prefix;
    this.redis = new Redis(redisUrl, { enableAutoPipelining: true });
    this.store = new UnreadStore(this.redis, this.prefix, { tombstoneTtlMs: 86_400_000, deadLetterMax: 1_000 });
  }

  get sql(): Sql {
    return this.ds.sql;
  }

  config(extra: Record<string, string> = {}): Config {
    return loadConfig({
      DATABASE_URL: this.ds.url,
      REDIS_URL: this.redisUrl,
      UNREAD_KEY_PREFIX: this.prefix,
      UNREAD_BRIDGE_NAME: 'bench',
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      ...extra,
    });
  }

  /** Starts the real bridge in-process (src/launch.ts), with its own Redis and PG connections. */
  startBridge(extra: Record<string, string> = {}): RunningBridge {
    if (this.bridge) throw new Error('bridge already running');
    this.bridge = startBridge(this.config(extra), this.log);
    return this.bridge;
  }

  async stopBridge(): Promise<void> {
    const b = this.bridge;
    this.bridge = null;
    if (b) {
      await b.stop();
      this.bridgeErrors += await counter(b.bridge.metrics.errors);
    }
  }

  /** Same check as test/support/env.ts waitForBridge. */
  async waitForBridge(timeoutMs = 600_000, snapshot?: string): Promise<void> {
    const target = snapshot ?? (await queries.currentSnapshot(this.sql));
    const deadline = Date.now() + timeoutMs;
    while (!(await queries.bridgeHasReached(this.sql, 'bench', target))) {
      if (Date.now() > deadline) throw new Error(`bridge did not reach ${target} within ${timeoutMs} ms`);
      await sleep(5);
    }
  }

  /** Removes every key under the bench prefix (SCAN + UNLINK; never FLUSHALL on a shared Redis). */
  async clearRedis(): Promise<number> {
    return deletePrefix(this.redis, this.prefix);
  }

  async close(): Promise<void> {
    await this.stopBridge();
    this.redis.disconnect();
  }
}

export async function counter(c: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await c.get()).values[0]?.value ?? 0;
}
