import { z } from 'zod';
import {
  ConfigError,
  clusterNodes,
  clusterNodesSchema,
  envBool as bool,
  envInt as int,
  envUrl,
  keyPrefixSchema,
  logLevelSchema,
  parseEnv,
  redisUrlSchema,
} from './env.js';

export { ConfigError };

const schema = z.object({
  DATABASE_URL: envUrl(['postgres:', 'postgresql:']).default('postgres://postgres@127.0.0.1:5432/postgres'),
  REDIS_URL: redisUrlSchema,
  REDIS_CLUSTER_NODES: clusterNodesSchema,
  UNREAD_KEY_PREFIX: keyPrefixSchema,
  UNREAD_BATCH_SIZE: int(1, 100_000, 20_000),
  UNREAD_HYDRATE_BATCH_SIZE: int(1, 10_000, 2_000),
  UNREAD_HYDRATE_TIMEOUT_MS: int(10, 60_000, 3_000),
  UNREAD_POLL_INTERVAL_MS: int(5, 60_000, 100),
  UNREAD_POLL_MIN_MS: int(1, 1_000, 2),
  UNREAD_CHECKPOINT_INTERVAL_MS: int(0, 60_000, 200),
  UNREAD_TOMBSTONE_TTL_MS: int(1_000, 30 * 86_400_000, 86_400_000),
  UNREAD_PRUNE_INTERVAL_MS: int(1_000, 86_400_000, 60_000),
  UNREAD_LOG_MIN_AGE_S: int(0, 30 * 86_400, 3_600),
  UNREAD_LOG_MAX_AGE_S: int(60, 365 * 86_400, 7 * 86_400),
  UNREAD_DEAD_LETTER_MAX: int(1, 1_000_000, 1_000),
  UNREAD_METRICS_PORT: int(0, 65_535, 9_464),
  UNREAD_METRICS_HOST: z.string().default('127.0.0.1'),
  UNREAD_CYCLE_TIMEOUT_MS: int(1_000, 3_600_000, 120_000),
  UNREAD_VERIFY_INTERVAL_MS: int(0, 86_400_000, 30_000),
  UNREAD_VERIFY_SAMPLE: int(1, 10_000, 50),
  UNREAD_DB_CHECK_INTERVAL_MS: int(0, 3_600_000, 5_000),
  UNREAD_BRIDGE_NAME: z
    .string()
    .default('default')
    .refine((v) => /^[A-Za-z0-9_.-]{1,64}$/.test(v), { error: 'must be 1-64 characters of letters, digits, _ . -' }),
  UNREAD_AUTO_MIGRATE: bool(false),
  UNREAD_MIGRATE_LOCK_TIMEOUT_MS: int(50, 60_000, 1_000),
  UNREAD_MIGRATE_RETRIES: int(0, 100, 8),
  UNREAD_SOURCE: z
    .enum(['auto', 'logical', 'postgres', 'supabase'], { error: 'must be "auto", "logical", "postgres" or "supabase"' })
    .default('auto'),
  SUPABASE_URL: z
    .string()
    .optional()
    .refine((v) => v === undefined || /^https?:\/\/[^\s]+$/.test(v), { error: 'must be an http(s) URL' }),
  SUPABASE_SERVICE_ROLE_KEY: z.string().min(20, { error: 'looks too short for a service role key' }).optional(),
  UNREAD_REALTIME_SHARDS: int(1, 64, 4),
  UNREAD_CATCHUP_INTERVAL_MS: int(100, 3_600_000, 5_000),
  UNREAD_USER_TOPICS: bool(false),
  LOG_LEVEL: logLevelSchema,
});

type Env = z.output<typeof schema>;

export interface Config {
  databaseUrl: string;
  redisUrl: string;
  /** Cluster seed nodes ("host:port"); empty for a single Redis. */
  redisClusterNodes: string[];
  keyPrefix: string;
  batchSize: number;
  hydrateBatchSize: number;
  hydrateTimeoutMs: number;
  /** Longest wait between two polls of the log while idle. */
  pollIntervalMs: number;
  /** Poll interval right after changes (doubles while idle up to pollIntervalMs). */
  pollMinMs: number;
  checkpointIntervalMs: number;
  tombstoneTtlMs: number;
  /** How often the bridge checks the database's identity/horizons and its capture triggers. */
  dbCheckIntervalMs: number;
  pruneIntervalMs: number;
  logMinAgeSeconds: number;
  logMaxAgeSeconds: number;
  deadLetterMax: number;
  verifyIntervalMs: number;
  cycleTimeoutMs: number;
  /** Port of /metrics, /healthz, /readyz for the bridge; 0 = off. */
  metricsPort: number;
  metricsHost: string;
  verifySampleSize: number;
  bridgeName: string;
  autoMigrate: boolean;
  /** lock_timeout of migrations: how long DDL may queue app writes on chat_rooms before retrying. */
  migrateLockTimeoutMs: number;
  migrateRetries: number;
  /**
   * auto: logical decoding wakes the bridge when the server (wal_level=logical) and role
   * (REPLICATION) allow it, polling otherwise; logical: the same, refusing to start without it;
   * postgres: polling only; supabase: Realtime.
   */
  source: 'auto' | 'logical' | 'postgres' | 'supabase';
  supabaseUrl: string | null;
  supabaseServiceRoleKey: string | null;
  realtimeShards: number;
  /** Supabase-direct mode: the bridge broadcasts room changes to each user's private Realtime topic. */
  userTopics: boolean;
  catchupIntervalMs: number;
  logLevel: Env['LOG_LEVEL'];
}

/** Reads and validates the environment; throws ConfigError naming every bad variable at once. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const e = parseEnv(schema, env, ['SUPABASE_SERVICE_ROLE_KEY']);
  const extra: string[] = [];
  if (e.UNREAD_LOG_MAX_AGE_S < e.UNREAD_LOG_MIN_AGE_S) {
    extra.push('UNREAD_LOG_MAX_AGE_S must not be smaller than UNREAD_LOG_MIN_AGE_S');
  }
  if (e.UNREAD_SOURCE === 'supabase') {
    if (!e.SUPABASE_URL) extra.push('SUPABASE_URL is required when UNREAD_SOURCE=supabase');
    if (!e.SUPABASE_SERVICE_ROLE_KEY) extra.push('SUPABASE_SERVICE_ROLE_KEY is required when UNREAD_SOURCE=supabase');
  }
  if (extra.length > 0) throw new ConfigError(extra);
  return {
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    redisClusterNodes: clusterNodes(e.REDIS_URL, e.REDIS_CLUSTER_NODES),
    keyPrefix: e.UNREAD_KEY_PREFIX,
    batchSize: e.UNREAD_BATCH_SIZE,
    hydrateBatchSize: e.UNREAD_HYDRATE_BATCH_SIZE,
    hydrateTimeoutMs: e.UNREAD_HYDRATE_TIMEOUT_MS,
    pollIntervalMs: e.UNREAD_POLL_INTERVAL_MS,
    pollMinMs: e.UNREAD_POLL_MIN_MS,
    checkpointIntervalMs: e.UNREAD_CHECKPOINT_INTERVAL_MS,
    tombstoneTtlMs: e.UNREAD_TOMBSTONE_TTL_MS,
    pruneIntervalMs: e.UNREAD_PRUNE_INTERVAL_MS,
    logMinAgeSeconds: e.UNREAD_LOG_MIN_AGE_S,
    logMaxAgeSeconds: e.UNREAD_LOG_MAX_AGE_S,
    deadLetterMax: e.UNREAD_DEAD_LETTER_MAX,
    verifyIntervalMs: e.UNREAD_VERIFY_INTERVAL_MS,
    cycleTimeoutMs: e.UNREAD_CYCLE_TIMEOUT_MS,
    dbCheckIntervalMs: e.UNREAD_DB_CHECK_INTERVAL_MS,
    metricsPort: e.UNREAD_METRICS_PORT,
    metricsHost: e.UNREAD_METRICS_HOST,
    verifySampleSize: e.UNREAD_VERIFY_SAMPLE,
    bridgeName: e.UNREAD_BRIDGE_NAME,
    autoMigrate: e.UNREAD_AUTO_MIGRATE,
    migrateLockTimeoutMs: e.UNREAD_MIGRATE_LOCK_TIMEOUT_MS,
    migrateRetries: e.UNREAD_MIGRATE_RETRIES,
    source: e.UNREAD_SOURCE,
    supabaseUrl: e.SUPABASE_URL ?? null,
    supabaseServiceRoleKey: e.SUPABASE_SERVICE_ROLE_KEY ?? null,
    realtimeShards: e.UNREAD_REALTIME_SHARDS,
    userTopics: e.UNREAD_USER_TOPICS,
    catchupIntervalMs: e.UNREAD_CATCHUP_INTERVAL_MS,
    logLevel: e.LOG_LEVEL,
  };
}
