import { Bridge } from './bridge.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { BridgeMetrics } from './metrics.js';
import { startOpsServer } from './ops.js';
import { PostgresSource } from './sources/postgres.js';
import { SupabaseSource } from './sources/supabase.js';
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
    (config.source === 'supabase'
      ? new SupabaseSource({
          // loadConfig guarantees both when UNREAD_SOURCE=supabase.
          supabaseUrl: config.supabaseUrl ?? '',
          serviceRoleKey: config.supabaseServiceRoleKey ?? '',
          databaseUrl: config.databaseUrl,
          bridgeName: config.bridgeName,
          shards: config.realtimeShards,
          catchupIntervalMs: config.catchupIntervalMs,
          batchSize: config.batchSize,
          logMinAgeSeconds: config.logMinAgeSeconds,
          logMaxAgeSeconds: config.logMaxAgeSeconds,
          log,
        })
      : null) ??
    new PostgresSource({
      databaseUrl: config.databaseUrl,
      bridgeName: config.bridgeName,
      batchSize: config.batchSize,
      checkpointIntervalMs: config.checkpointIntervalMs,
      pollMinMs: config.pollMinMs,
      logMinAgeSeconds: config.logMinAgeSeconds,
      logMaxAgeSeconds: config.logMaxAgeSeconds,
      log,
    });
  const metrics = new BridgeMetrics(true);
  if (source.backlog) metrics.observeBacklog(() => source.backlog?.() ?? Promise.resolve(0));
  metrics.observeRedis(store);
  const bridge = new Bridge({
    source,
    store,
    log,
    metrics,
    hydrateBatchSize: config.hydrateBatchSize,
    pollIntervalMs: config.pollIntervalMs,
    maintainIntervalMs: config.pruneIntervalMs,
    verifyIntervalMs: config.verifyIntervalMs,
    verifySampleSize: config.verifySampleSize,
    cycleTimeoutMs: config.cycleTimeoutMs,
    bridgeName: config.bridgeName,
    identityCheckMs: config.dbCheckIntervalMs,
    ...(overrides.interceptor ? { interceptor: overrides.interceptor } : {}),
  });
  const controller = new AbortController();
  const ops =
    config.metricsPort > 0
      ? startOpsServer({
          port: config.metricsPort,
          host: config.metricsHost,
          registry: metrics.registry,
          log,
          readiness: {
            source: () => source.check?.() ?? Promise.resolve(),
            redis: async () => {
              await redis.ping();
            },
            bridge: async () => {
              const s = bridge.status();
              if (s.lastError) throw new Error(s.lastError);
            },
            capture: async () => {
              const problem = bridge.status().captureProblem;
              if (problem) throw new Error(problem);
            },
          },
        }).catch((err: unknown) => {
          log.error({ err: (err as Error).message, port: config.metricsPort }, 'metrics server did not start');
          return null;
        })
      : Promise.resolve(null);
  const done = bridge.run(controller.signal).finally(async () => {
    await (await ops)?.close();
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
