// The one place that wires processes: each `unread-sync` command that runs until stopped is one
// function here (bridge, serve, start, demo). Below it, the layers only get what they are handed.
import { randomBytes } from 'node:crypto';
import { startWhenReady } from './backoff.js';
import { Bridge } from './bridge/bridge.js';
import { BridgeMetrics } from './bridge/metrics.js';
import { UserTopicPublisher } from './bridge/publish.js';
import { SeedCompatChatSocket } from './compat/seed-compat.js';
import type { Config } from './config.js';
import { connect, connectPooled, queries, type Sql } from './db.js';
import { handleDemoRequest, seedDemo } from './demo/demo.js';
import { ErrorCode, hasCode, UnreadSyncError } from './errors.js';
import type { Logger } from './log.js';
import { migrate, pendingMigrations } from './migrate.js';
import { NOT_MIGRATED, postgresProblem, redisProblem } from './problems.js';
import { startOpsServer, type Check } from './ops.js';
import { DbFallback } from './read/fallback.js';
import { loadSocketConfig, type SocketConfig } from './socket/config.js';
import { startSocketServer, type RunningSocketServer, type SocketServerOverrides } from './socket/server.js';
import { LogicalSource } from './sources/logical.js';
import { PostgresSource } from './sources/postgres.js';
import { SupabaseSource } from './sources/supabase.js';
import type { ChangeSource } from './sources/source.js';
import { createRedis, UnreadStore, type RedisClient } from './store/store.js';

export interface RunningBridge {
  bridge: Bridge;
  store: UnreadStore;
  /** Resolves when the bridge has stopped (after `stop()` or the signal). */
  done: Promise<void>;
  /** What /readyz checks; each failing check's message is a reason the bridge is not ready. */
  readiness: Record<string, Check>;
  stop(): Promise<void>;
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  work.catch(() => {});
  return Promise.race([
    work,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The log source for UNREAD_SOURCE=auto|logical (woken by logical decoding when it can) or postgres (polling). */
function postgresSource(config: Config, log: Logger): ChangeSource {
  const options = {
    databaseUrl: config.databaseUrl,
    bridgeName: config.bridgeName,
    batchSize: config.batchSize,
    checkpointIntervalMs: config.checkpointIntervalMs,
    pollMinMs: config.pollMinMs,
    logMinAgeSeconds: config.logMinAgeSeconds,
    logMaxAgeSeconds: config.logMaxAgeSeconds,
    log,
  };
  if (config.source === 'auto' || config.source === 'logical') return new LogicalSource({ ...options, mode: config.source });
  return new PostgresSource(options);
}

/** Wires config -> source -> bridge -> store and starts the loop. */
export function startBridge(
  config: Config,
  log: Logger,
  overrides: {
    source?: ChangeSource;
    redis?: RedisClient;
    interceptor?: (rows: unknown[]) => unknown[];
    /** Apply pending migrations before starting (default: config.autoMigrate). */
    migrate?: boolean;
  } = {},
): RunningBridge {
  const redis = overrides.redis ?? createRedis(config.redisUrl, { clusterNodes: config.redisClusterNodes });
  // ioredis reports every failed reconnect; one line per distinct error is enough.
  let lastRedisError: string | null = null;
  redis.on('error', (err: Error) => {
    if (err.message === lastRedisError) return;
    lastRedisError = err.message;
    log.warn({ err: err.message }, 'redis connection error');
  });
  redis.on('ready', () => {
    lastRedisError = null;
  });
  const redisCheck = async () => {
    try {
      await withTimeout(redis.ping(), 1_500, 'PING');
    } catch (err) {
      throw new Error(redisProblem(err, config.redisUrl, config.redisClusterNodes));
    }
  };
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
    postgresSource(config, log);
  // Supabase-direct mode: its own single-statement connection (pooler-safe), off the cycle's.
  const publishSql = config.userTopics ? connectPooled(config.databaseUrl, { max: 1, applicationName: 'unread-sync user topics' }) : null;
  const publisher = publishSql ? new UserTopicPublisher(publishSql, log) : null;
  const metrics = new BridgeMetrics(true);
  if (source.backlog) metrics.observeBacklog(() => source.backlog?.() ?? Promise.resolve(0));
  metrics.observeRedis(store);
  (source as ChangeSource).observe?.(metrics.registry);
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
    ...(publisher ? { onChanges: (events) => publisher.publish(events) } : {}),
  });
  const controller = new AbortController();
  const startup = { reason: 'starting' as string | null };
  const readiness: Record<string, Check> = {
    startup: async () => {
      if (startup.reason) throw new Error(startup.reason);
    },
    source: async () => {
      try {
        await (source.check?.() ?? Promise.resolve());
      } catch (err) {
        throw new Error(postgresProblem(err, config.databaseUrl));
      }
    },
    redis: redisCheck,
    bridge: async () => {
      const s = bridge.status();
      if (s.lastError) throw new Error(s.lastError);
    },
    capture: async () => {
      const problem = bridge.status().captureProblem;
      if (problem) throw new Error(problem);
    },
  };
  const ops =
    config.metricsPort > 0
      ? startOpsServer({
          port: config.metricsPort,
          host: config.metricsHost,
          registry: metrics.registry,
          log,
          readiness,
        }).catch((err: unknown) => {
          log.error({ err: (err as Error).message, port: config.metricsPort }, 'metrics server did not start');
          return null;
        })
      : Promise.resolve(null);
  const postgresStep = async (work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (err) {
      if (hasCode(err, ErrorCode.NOT_MIGRATED)) throw err;
      throw new Error(postgresProblem(err, config.databaseUrl));
    }
  };
  const steps = [
    { run: redisCheck },
    {
      run: () =>
        postgresStep(async () => {
          const sql = connect(config.databaseUrl, { max: 1, applicationName: 'unread-sync start-up check' });
          try {
            await queries.ping(sql);
          } finally {
            await sql.end({ timeout: 1 });
          }
        }),
    },
    (overrides.migrate ?? config.autoMigrate)
      ? {
          run: () =>
            postgresStep(() =>
              migrate({
                databaseUrl: config.databaseUrl,
                direction: 'up',
                lockTimeoutMs: config.migrateLockTimeoutMs,
                retries: config.migrateRetries,
                signal: controller.signal,
                log: (m) => log.info(m),
              }),
            ),
        }
      : {
          run: () =>
            postgresStep(async () => {
              if ((await pendingMigrations(config.databaseUrl)).length > 0) throw new UnreadSyncError(ErrorCode.NOT_MIGRATED, NOT_MIGRATED);
            }),
        },
  ];
  const done = (async () => {
    if (await startWhenReady(steps, controller.signal, log, startup)) await bridge.run(controller.signal);
    else {
      await source.stop().catch(() => {});
      log.info('stopped before start-up completed');
    }
  })().finally(async () => {
    await (await ops)?.close();
    await publishSql?.end({ timeout: 5 });
    if (!overrides.redis) redis.disconnect();
  });
  return {
    bridge,
    store,
    done,
    readiness,
    stop: async () => {
      controller.abort();
      await done;
    },
  };
}

/** A process started here: `done` resolves once it has stopped (after `stop()`). */
export interface RunningProcess {
  done: Promise<void>;
  stop(): Promise<void>;
}

export interface RunningServe extends RunningSocketServer, RunningProcess {
  /** The seed-compatible adapter the demo routes write through (demo mode only). */
  chat: SeedCompatChatSocket | null;
}

/**
 * `unread-sync serve`: the socket server with what its config asks for wired in: the database
 * fallback (UNREAD_DB_FALLBACK) and the demo routes with their adapter (UNREAD_DEMO). The socket
 * layer itself reads Redis only.
 */
export async function startServe(
  config: SocketConfig,
  log: Logger,
  overrides: Omit<SocketServerOverrides, 'fallback' | 'extend'> & { sql?: Sql } = {},
): Promise<RunningServe> {
  const { sql: givenSql, ...serverOverrides } = overrides;
  const demoSql = config.demo ? (givenSql ?? connect(config.databaseUrl as string, { max: 4, applicationName: 'unread-sync demo' })) : null;
  const fallbackSql = config.dbFallback
    ? connect(config.databaseUrl as string, { max: config.dbFallbackMaxConcurrent, applicationName: 'unread-sync fallback' })
    : null;
  let released: Promise<void> | null = null;
  const release = () =>
    (released ??= (async () => {
      if (demoSql && !givenSql) await demoSql.end({ timeout: 5 });
      await fallbackSql?.end({ timeout: 5 });
    })());
  let chat: SeedCompatChatSocket | null = null;
  let server: RunningSocketServer;
  try {
    server = await startSocketServer(config, log, {
      ...serverOverrides,
      ...(fallbackSql ? { fallback: new DbFallback(fallbackSql, { maxConcurrent: config.dbFallbackMaxConcurrent }) } : {}),
      extend: (badges) => {
        if (!demoSql) return { close: release };
        const adapter = new SeedCompatChatSocket(demoSql, badges, { log });
        chat = adapter;
        log.warn('demo mode: /demo endpoints mint tokens for demo users and write chat_rooms; never enable in production');
        const jwtSecret = config.jwtSecret;
        return {
          close: release,
          ...(jwtSecret
            ? { handle: (req, res) => handleDemoRequest(req, res, { jwtSecret, audience: config.jwtAudience, chat: adapter }) }
            : {}),
        };
      },
    });
  } catch (err) {
    await release(); // nothing left open when the server did not start
    throw err;
  }
  const done = new Promise<void>((resolve) => server.http.once('close', () => resolve()));
  return { ...server, chat, done, stop: server.close };
}

/**
 * `unread-sync start`, the local default: the bridge (applying migrations itself, retried while
 * Postgres is down) and the socket server in one process. The server listens at once so /readyz
 * can say what is awaited. Without SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL sockets use an
 * ephemeral secret.
 */
export async function startLocal(
  config: Config,
  log: Logger,
  env: Record<string, string | undefined> = process.env,
): Promise<RunningLocal> {
  const socketEnv: Record<string, string | undefined> = { ...env, REDIS_URL: config.redisUrl, UNREAD_KEY_PREFIX: config.keyPrefix };
  if (!socketEnv.SUPABASE_JWT_SECRET && !socketEnv.SUPABASE_JWKS_URL) {
    // Local default only: nobody outside this process knows this secret, so set
    // SUPABASE_JWT_SECRET (or SUPABASE_JWKS_URL) to let real clients connect.
    socketEnv.SUPABASE_JWT_SECRET = randomBytes(32).toString('hex');
    log.warn('no SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL: sockets use an ephemeral secret (see `npm run demo`)');
  }
  const bridge = startBridge(config, log, { migrate: true });
  let server: RunningServe;
  try {
    server = await startServe(loadSocketConfig(socketEnv), log, { readiness: bridge.readiness, index: true });
  } catch (err) {
    await bridge.stop(); // no headless bridge left holding the lock
    throw err;
  }
  log.info({ url: server.url }, 'bridge and socket server running');
  return { bridge, server, ...bothStop(bridge, server) };
}

export interface RunningLocal extends RunningProcess {
  bridge: RunningBridge;
  server: RunningServe;
}

export type RunningDemo = RunningLocal;

/** Done when the bridge is; stopping closes the server first (no socket outlives its bridge). */
function bothStop(bridge: RunningBridge, server: RunningSocketServer): RunningProcess {
  return {
    done: bridge.done,
    async stop() {
      await server.close();
      await bridge.stop();
    },
  };
}

/**
 * `unread-sync demo`: migrate, seed the demo rooms, run a bridge and a socket server in demo mode.
 * Without SUPABASE_JWT_SECRET a random secret is used: demo tokens only need to verify locally.
 */
export async function startDemo(config: Config, log: Logger, env: Record<string, string | undefined> = process.env): Promise<RunningDemo> {
  await migrate({
    databaseUrl: config.databaseUrl,
    direction: 'up',
    lockTimeoutMs: config.migrateLockTimeoutMs,
    retries: config.migrateRetries,
    log: (m) => log.info(m),
  });
  const sql = connect(config.databaseUrl, { max: 1, applicationName: 'unread-sync demo seed' });
  try {
    await seedDemo(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
  const socketConfig = loadSocketConfig({
    ...env,
    REDIS_URL: config.redisUrl,
    UNREAD_KEY_PREFIX: config.keyPrefix,
    DATABASE_URL: config.databaseUrl,
    SUPABASE_JWT_SECRET: env.SUPABASE_JWT_SECRET || randomBytes(32).toString('hex'),
    UNREAD_DEMO: 'true',
  });
  const bridge = startBridge(config, log);
  const server = await startServe(socketConfig, log);
  log.info({ url: server.url }, 'demo running: open the URL in a browser');
  return { bridge, server, ...bothStop(bridge, server) };
}
