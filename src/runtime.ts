import { Bridge } from './bridge.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { BridgeMetrics } from './metrics.js';
import { PostgresSource } from './sources/postgres.js';
import type { ChangeSource } from './sources/source.js';
import { createRedis, UnreadStore, type RedisClient } from './store/store.js';

export interface RunningBridge {
  bridge: Bridge;
  store: UnreadStore;
  /** Resolves when the bridge has stopped (after `stop()` or the signal). */
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Wires config -> source -> bridge -> store and starts the loop. */
export function startBridge(
  config: Config,
  log: Logger,
  overrides: { source?: ChangeSource; redis?: RedisClient; interceptor?: (rows: unknown[]) => unknown[] } = {},
): RunningBridge {
  const redis = overrides.redis ?? createRedis(config.redisUrl, { clusterNodes: config.redisClusterNodes });
  redis.on('error', (err: Error) => log.warn({ err: err.message }, 'redis connection error'));
  const store = new UnreadStore(redis, config.keyPrefix, {
    tombstoneTtlMs: config.tombstoneTtlMs,
    deadLetterMax: config.deadLetterMax,
  });
  const source =
    overrides.source ??
    new PostgresSource({
      databaseUrl: config.databaseUrl,
      bridgeName: config.bridgeName,
      batchSize: config.batchSize,
      checkpointIntervalMs: config.checkpointIntervalMs,
      logMinAgeSeconds: config.logMinAgeSeconds,
      logMaxAgeSeconds: config.logMaxAgeSeconds,
      log,
    });
  const bridge = new Bridge({
    source,
    store,
    log,
    metrics: new BridgeMetrics(),
    hydrateBatchSize: config.hydrateBatchSize,
    pollIntervalMs: config.pollIntervalMs,
    maintainIntervalMs: config.pruneIntervalMs,
    verifyIntervalMs: config.verifyIntervalMs,
    verifySampleSize: config.verifySampleSize,
    ...(overrides.interceptor ? { interceptor: overrides.interceptor } : {}),
  });
  const controller = new AbortController();
  const done = bridge.run(controller.signal).finally(() => {
    if (!overrides.redis) redis.disconnect();
  });
  return {
    bridge,
    store,
    done,
    stop: async () => {
      controller.abort();
      await done;
    },
  };
}
