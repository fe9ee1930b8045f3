import { z } from 'zod';
import { ConfigError, clusterNodesOf, envBool as bool, envInt as int, envList, envMatch, envUrl as url, parseEnv } from './env.js';

export { ConfigError };

/** One environment variable: its name, its schema (default included), and who reads it. */
export interface Setting {
  readonly env: string;
  /** Parses the variable's string (undefined when unset or empty) into the field's value. */
  readonly schema: z.ZodType;
  /** bridge: `Config` (bridge and one-shot commands); socket: `SocketConfig`; both: both. */
  readonly scope: 'bridge' | 'socket' | 'both';
  /** The socket server's own schema where it differs from the bridge's. */
  readonly socketSchema?: z.ZodType;
  /** A credential: a bad value is never echoed in errors. */
  readonly secret?: true;
}

const sourceError = 'must be "auto", "logical", "postgres" or "supabase"';
export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const postgresUrl = url(['postgres:', 'postgresql:']);

/**
 * Every configuration variable, once: field name of `Config` / `SocketConfig` → environment
 * variable, schema with its default, scope. The types, the loaders, the error messages and the
 * README check (test/config.test.ts) all come from here.
 */
export const settings = {
  databaseUrl: {
    env: 'DATABASE_URL',
    schema: postgresUrl.default('postgres://postgres@127.0.0.1:5432/postgres'),
    scope: 'both',
    // The socket server needs no database credentials: no default, read only for the demo
    // endpoints and the fallback.
    socketSchema: postgresUrl.optional(),
  },
  redisUrl: { env: 'REDIS_URL', schema: url(['redis:', 'rediss:', 'redis+cluster:']).default('redis://127.0.0.1:6379'), scope: 'both' },
  /** Cluster seed nodes ("host:port"); empty for a single Redis. REDIS_URL=redis+cluster://h:p gives one seed (a host list fails the URL check). */
  redisClusterNodes: {
    env: 'REDIS_CLUSTER_NODES',
    schema: z
      .string()
      .optional()
      .transform((v) => (v === undefined ? [] : v.split(',').map((n) => n.trim())))
      .refine((nodes) => nodes.every((n) => /^[A-Za-z0-9_.-]+:\d{1,5}$/.test(n)), {
        error: 'must be a comma-separated list of host:port',
      }),
    scope: 'both',
  },
  /** Ends up in every Redis key; braces would break cluster hash tags. */
  keyPrefix: {
    env: 'UNREAD_KEY_PREFIX',
    schema: envMatch(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1-64 characters of letters, digits, _ . : -').default('unread:'),
    scope: 'both',
  },
  batchSize: { env: 'UNREAD_BATCH_SIZE', schema: int(1, 100_000, 20_000), scope: 'bridge' },
  hydrateBatchSize: { env: 'UNREAD_HYDRATE_BATCH_SIZE', schema: int(1, 10_000, 2_000), scope: 'bridge' },
  hydrateTimeoutMs: { env: 'UNREAD_HYDRATE_TIMEOUT_MS', schema: int(10, 60_000, 3_000), scope: 'both' },
  /** Longest wait between two polls of the log while idle. */
  pollIntervalMs: { env: 'UNREAD_POLL_INTERVAL_MS', schema: int(5, 60_000, 100), scope: 'bridge' },
  /** Poll interval right after changes (doubles while idle up to pollIntervalMs). */
  pollMinMs: { env: 'UNREAD_POLL_MIN_MS', schema: int(1, 1_000, 2), scope: 'bridge' },
  checkpointIntervalMs: { env: 'UNREAD_CHECKPOINT_INTERVAL_MS', schema: int(0, 60_000, 200), scope: 'bridge' },
  tombstoneTtlMs: { env: 'UNREAD_TOMBSTONE_TTL_MS', schema: int(1_000, 30 * 86_400_000, 86_400_000), scope: 'bridge' },
  pruneIntervalMs: { env: 'UNREAD_PRUNE_INTERVAL_MS', schema: int(1_000, 86_400_000, 60_000), scope: 'bridge' },
  logMinAgeSeconds: { env: 'UNREAD_LOG_MIN_AGE_S', schema: int(0, 30 * 86_400, 3_600), scope: 'bridge' },
  logMaxAgeSeconds: { env: 'UNREAD_LOG_MAX_AGE_S', schema: int(60, 365 * 86_400, 7 * 86_400), scope: 'bridge' },
  deadLetterMax: { env: 'UNREAD_DEAD_LETTER_MAX', schema: int(1, 1_000_000, 1_000), scope: 'bridge' },
  /** Port of /metrics, /healthz, /readyz for the bridge; 0 = off. */
  metricsPort: { env: 'UNREAD_METRICS_PORT', schema: int(0, 65_535, 9_464), scope: 'bridge' },
  metricsHost: { env: 'UNREAD_METRICS_HOST', schema: z.string().default('127.0.0.1'), scope: 'bridge' },
  cycleTimeoutMs: { env: 'UNREAD_CYCLE_TIMEOUT_MS', schema: int(1_000, 3_600_000, 120_000), scope: 'bridge' },
  verifyIntervalMs: { env: 'UNREAD_VERIFY_INTERVAL_MS', schema: int(0, 86_400_000, 30_000), scope: 'bridge' },
  verifySampleSize: { env: 'UNREAD_VERIFY_SAMPLE', schema: int(1, 10_000, 50), scope: 'bridge' },
  /** How often the bridge checks the database's identity/horizons and its capture triggers. */
  dbCheckIntervalMs: { env: 'UNREAD_DB_CHECK_INTERVAL_MS', schema: int(0, 3_600_000, 5_000), scope: 'bridge' },
  bridgeName: {
    env: 'UNREAD_BRIDGE_NAME',
    schema: envMatch(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 characters of letters, digits, _ . -').default('default'),
    scope: 'bridge',
  },
  autoMigrate: { env: 'UNREAD_AUTO_MIGRATE', schema: bool(false), scope: 'bridge' },
  /** lock_timeout of migrations: how long DDL may queue app writes on chat_rooms before retrying. */
  migrateLockTimeoutMs: { env: 'UNREAD_MIGRATE_LOCK_TIMEOUT_MS', schema: int(50, 60_000, 1_000), scope: 'bridge' },
  migrateRetries: { env: 'UNREAD_MIGRATE_RETRIES', schema: int(0, 100, 8), scope: 'bridge' },
  /**
   * auto: logical decoding wakes the bridge when the server (wal_level=logical) and role
   * (REPLICATION) allow it, polling otherwise; logical: the same, refusing to start without it;
   * postgres: polling only; supabase: Realtime.
   */
  source: {
    env: 'UNREAD_SOURCE',
    schema: z.enum(['auto', 'logical', 'postgres', 'supabase'], { error: sourceError }).default('auto'),
    scope: 'bridge',
  },
  supabaseUrl: {
    env: 'SUPABASE_URL',
    schema: envMatch(/^https?:\/\/[^\s]+$/, 'must be an http(s) URL')
      .optional()
      .transform((v) => v ?? null),
    scope: 'bridge',
  },
  supabaseServiceRoleKey: {
    env: 'SUPABASE_SERVICE_ROLE_KEY',
    schema: z
      .string()
      .min(20, { error: 'looks too short for a service role key' })
      .optional()
      .transform((v) => v ?? null),
    scope: 'bridge',
    secret: true,
  },
  realtimeShards: { env: 'UNREAD_REALTIME_SHARDS', schema: int(1, 64, 4), scope: 'bridge' },
  catchupIntervalMs: { env: 'UNREAD_CATCHUP_INTERVAL_MS', schema: int(100, 3_600_000, 5_000), scope: 'bridge' },
  /** Supabase-direct mode: the bridge broadcasts room changes to each user's private Realtime topic. */
  userTopics: { env: 'UNREAD_USER_TOPICS', schema: bool(false), scope: 'bridge' },
  logLevel: { env: 'LOG_LEVEL', schema: z.enum(logLevels).default('info'), scope: 'both' },

  port: { env: 'PORT', schema: int(0, 65_535, 3000), scope: 'socket' },
  host: {
    env: 'HOST',
    schema: envMatch(/^[A-Za-z0-9.:_-]{1,255}$/, 'must be a host name or IP address').default('127.0.0.1'),
    scope: 'socket',
  },
  /** Supabase's legacy HS256 secret; shorter secrets are brute-forceable. */
  jwtSecret: {
    env: 'SUPABASE_JWT_SECRET',
    schema: z.string().min(32, { error: 'must be at least 32 characters' }).optional(),
    scope: 'socket',
    secret: true,
  },
  jwksUrl: { env: 'SUPABASE_JWKS_URL', schema: url(['https:', 'http:']).optional(), scope: 'socket' },
  jwtAudience: { env: 'SUPABASE_JWT_AUDIENCE', schema: z.string().min(1).default('authenticated'), scope: 'socket' },
  demo: { env: 'UNREAD_DEMO', schema: bool(false), scope: 'socket' },
  /**
   * Read badges from the database (capped, behind a circuit breaker) while Redis is down. Off by
   * default: the socket layer is Redis-only by design.
   */
  dbFallback: { env: 'UNREAD_DB_FALLBACK', schema: bool(false), scope: 'socket' },
  dbFallbackMaxConcurrent: { env: 'UNREAD_DB_FALLBACK_MAX_CONCURRENT', schema: int(1, 1_000, 4), scope: 'socket' },
  coalesceMs: { env: 'UNREAD_SOCKET_COALESCE_MS', schema: int(0, 10_000, 50), scope: 'socket' },
  /** How often connected users are re-checked against Redis (catches wiped keys, lost messages); 0 = never. */
  reconcileIntervalMs: { env: 'UNREAD_SOCKET_RECONCILE_MS', schema: int(0, 3_600_000, 5_000), scope: 'socket' },
  /** Allowed CORS origins for browsers on other origins; empty = same origin only. */
  corsOrigins: { env: 'UNREAD_SOCKET_CORS_ORIGIN', schema: envList(), scope: 'socket' },
} satisfies Record<string, Setting>;

type Settings = typeof settings;
export type Scope = 'bridge' | 'socket';

/** The fields `scope` reads, typed by their schemas (the socket's own schema where it has one). */
export type ScopedConfig<S extends Scope> = {
  -readonly [K in keyof Settings as Settings[K]['scope'] extends S | 'both' ? K : never]: z.output<
    S extends 'socket'
      ? Settings[K] extends { socketSchema: infer O extends z.ZodType }
        ? O
        : Settings[K]['schema']
      : Settings[K]['schema']
  >;
};

export interface Config extends ScopedConfig<'bridge'> {}

/** The settings `scope` reads, as [field, setting] pairs. */
export function settingsOf(scope: Scope): Array<[string, Setting]> {
  return Object.entries(settings as Record<string, Setting>).filter(([, s]) => s.scope === scope || s.scope === 'both');
}

/**
 * Reads `scope`'s variables from `env` into its fields; throws one ConfigError naming every bad
 * variable (secrets not echoed). Cross-variable checks are the caller's.
 */
export function readSettings<S extends Scope>(scope: S, env: Record<string, string | undefined>): ScopedConfig<S> {
  const entries = settingsOf(scope);
  const schema = z.object(
    Object.fromEntries(entries.map(([, s]) => [s.env, scope === 'socket' && s.socketSchema ? s.socketSchema : s.schema])),
  );
  const secrets = entries.filter(([, s]) => s.secret).map(([, s]) => s.env);
  const parsed: Record<string, unknown> = parseEnv(schema, env, secrets);
  const fields = Object.fromEntries(entries.map(([field, s]) => [field, parsed[s.env]])) as {
    redisUrl: string;
    redisClusterNodes: string[];
  };
  if (fields.redisClusterNodes.length === 0) fields.redisClusterNodes = clusterNodesOf(fields.redisUrl);
  // Each field was parsed by the schema ScopedConfig<S> derives its type from.
  return fields as unknown as ScopedConfig<S>;
}

/** Reads and validates the environment; throws ConfigError naming every bad variable at once. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const c = readSettings('bridge', env);
  const issues: string[] = [];
  if (c.logMaxAgeSeconds < c.logMinAgeSeconds) issues.push('UNREAD_LOG_MAX_AGE_S must not be smaller than UNREAD_LOG_MIN_AGE_S');
  if (c.source === 'supabase') {
    if (!c.supabaseUrl) issues.push('SUPABASE_URL is required when UNREAD_SOURCE=supabase');
    if (!c.supabaseServiceRoleKey) issues.push('SUPABASE_SERVICE_ROLE_KEY is required when UNREAD_SOURCE=supabase');
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return c;
}
