import { Bridge, type BridgeOptions } from '../../src/bridge/bridge.js';
import { PostgresSource, type PostgresSourceOptions } from '../../src/sources/postgres.js';
import type { Config } from '../../src/config.js';
import { testLogger, type TestRedis } from './env.js';

/** The polling source's options from a test config (checkpoints on every cycle: deterministic tests). */
export function sourceOptions(config: Config, log: PostgresSourceOptions['log']): PostgresSourceOptions {
  return {
    databaseUrl: config.databaseUrl,
    bridgeName: config.bridgeName,
    batchSize: config.batchSize,
    checkpointIntervalMs: 0,
    pollMinMs: config.pollMinMs,
    logMinAgeSeconds: config.logMinAgeSeconds,
    logMaxAgeSeconds: config.logMaxAgeSeconds,
    log,
  };
}

/** A bridge driven step by step (runOnce) for deterministic tests. */
export async function steppedBridge(
  config: Config,
  r: TestRedis,
  interceptor?: (rows: unknown[]) => unknown[],
  extra: Partial<BridgeOptions> = {},
) {
  const log = testLogger();
  const source = new PostgresSource(sourceOptions(config, log));
  const controller = new AbortController();
  await source.start(controller.signal);
  const bridge = new Bridge({ source, store: r.store, log, ...(interceptor ? { interceptor } : {}), ...extra });
  return {
    bridge,
    source,
    /** Cycles until a cycle delivers nothing and no hydration is pending. */
    async drain() {
      for (let i = 0; i < 1000; i++) {
        const n = await bridge.runOnce();
        if (n === 0) return;
      }
      throw new Error('bridge did not drain');
    },
    async hydrate(users: string[]) {
      bridge.requestHydration(users);
      await bridge.runOnce();
    },
    stop: async () => {
      bridge.dispose();
      await source.stop();
    },
  };
}

export type SteppedBridge = Awaited<ReturnType<typeof steppedBridge>>;
