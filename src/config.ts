import { z } from 'zod';

/** Raised when the environment is wrong; `issues` holds one readable line per bad variable. */
export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid configuration:\n  - ${issues.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const int = (min: number, max: number, fallback: number) =>
  z.coerce
    .number({ error: 'must be a number' })
    .int({ error: 'must be a whole number' })
    .min(min, { error: `must be at least ${min}` })
    .max(max, { error: `must be at most ${max}` })
    .default(fallback);

const url = (schemes: string[], fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine(
      (value) => {
        try {
          return schemes.includes(new URL(value).protocol);
        } catch {
          return false;
        }
      },
      { error: `must be a URL starting with ${schemes.map((s) => `${s}//`).join(' or ')}` },
    );

const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'], { error: 'must be true or false' })
    .optional()
    .transform((v) => (v === undefined ? fallback : ['true', '1', 'yes', 'on'].includes(v)));

// Key prefixes end up in every Redis key; braces would break cluster hash tags.
const prefix = z
  .string()
  .default('unread:')
  .refine((v) => /^[A-Za-z0-9_.:-]{1,64}$/.test(v), {
    error: 'must be 1-64 characters of letters, digits, _ . : -',
  });

const schema = z.object({
  DATABASE_URL: url(['postgres:', 'postgresql:'], 'postgres://postgres@127.0.0.1:5432/postgres'),
  REDIS_URL: url(['redis:', 'rediss:', 'redis+cluster:'], 'redis://127.0.0.1:6379'),
  // Seed nodes of a Redis Cluster, "host:port,host:port"; REDIS_URL=redis+cluster://h:p,h:p works too.
  REDIS_CLUSTER_NODES: z
    .string()
    .optional()
    .refine((v) => v === undefined || v.split(',').every((n) => /^[A-Za-z0-9_.-]+:\d{1,5}$/.test(n.trim())), {
      error: 'must be a comma-separated list of host:port',
    }),
  UNREAD_KEY_PREFIX: prefix,
  UNREAD_BATCH_SIZE: int(1, 100_000, 5_000),
  UNREAD_HYDRATE_BATCH_SIZE: int(1, 10_000, 500),
  UNREAD_HYDRATE_TIMEOUT_MS: int(10, 60_000, 3_000),
  UNREAD_POLL_INTERVAL_MS: int(5, 60_000, 1_000),
  UNREAD_CHECKPOINT_INTERVAL_MS: int(0, 60_000, 200),
  UNREAD_TOMBSTONE_TTL_MS: int(1_000, 30 * 86_400_000, 86_400_000),
  UNREAD_PRUNE_INTERVAL_MS: int(1_000, 86_400_000, 60_000),
  UNREAD_LOG_MIN_AGE_S: int(0, 30 * 86_400, 3_600),
  UNREAD_LOG_MAX_AGE_S: int(60, 365 * 86_400, 7 * 86_400),
  UNREAD_DEAD_LETTER_MAX: int(1, 1_000_000, 1_000),
  UNREAD_METRICS_PORT: int(0, 65_535, 9_464),
  UNREAD_METRICS_HOST: z.string().default('127.0.0.1'),
  UNREAD_VERIFY_INTERVAL_MS: int(0, 86_400_000, 30_000),
  UNREAD_VERIFY_SAMPLE: int(1, 10_000, 50),
  UNREAD_BRIDGE_NAME: z
    .string()
    .default('default')
    .refine((v) => /^[A-Za-z0-9_.-]{1,64}$/.test(v), { error: 'must be 1-64 characters of letters, digits, _ . -' }),
  UNREAD_AUTO_MIGRATE: bool(false),
  UNREAD_SOURCE: z.enum(['postgres', 'supabase'], { error: 'must be "postgres" or "supabase"' }).default('postgres'),
  SUPABASE_URL: z
    .string()
    .optional()
    .refine((v) => v === undefined || /^https?:\/\/[^\s]+$/.test(v), { error: 'must be an http(s) URL' }),
  SUPABASE_SERVICE_ROLE_KEY: z.string().min(20, { error: 'looks too short for a service role key' }).optional(),
  UNREAD_REALTIME_SHARDS: int(1, 64, 4),
  UNREAD_CATCHUP_INTERVAL_MS: int(100, 3_600_000, 5_000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
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
  pollIntervalMs: number;
  checkpointIntervalMs: number;
  tombstoneTtlMs: number;
  pruneIntervalMs: number;
  logMinAgeSeconds: number;
  logMaxAgeSeconds: number;
  deadLetterMax: number;
  verifyIntervalMs: number;
  /** Port of /metrics, /healthz, /readyz for the bridge; 0 = off. */
  metricsPort: number;
  metricsHost: string;
  verifySampleSize: number;
  bridgeName: string;
  autoMigrate: boolean;
  source: 'postgres' | 'supabase';
  supabaseUrl: string | null;
  supabaseServiceRoleKey: string | null;
  realtimeShards: number;
  catchupIntervalMs: number;
  logLevel: Env['LOG_LEVEL'];
}

function clusterNodes(url: string, list: string | undefined): string[] {
  if (list) return list.split(',').map((n) => n.trim());
  // The URL parser does not take a host list, so read it by hand.
  if (url.startsWith('redis+cluster://')) return url.slice('redis+cluster://'.length).split('/')[0]!.split(',');
  return [];
}

/** Reads and validates the environment; throws ConfigError naming every bad variable at once. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset", as in most .env tooling.
  const input = Object.fromEntries(
    Object.keys(schema.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]),
  );
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const name = String(i.path[0] ?? '?');
        return `${name} ${i.message} (got ${JSON.stringify(input[name] ?? null)})`;
      }),
    );
  }
  const e = parsed.data;
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
    checkpointIntervalMs: e.UNREAD_CHECKPOINT_INTERVAL_MS,
    tombstoneTtlMs: e.UNREAD_TOMBSTONE_TTL_MS,
    pruneIntervalMs: e.UNREAD_PRUNE_INTERVAL_MS,
    logMinAgeSeconds: e.UNREAD_LOG_MIN_AGE_S,
    logMaxAgeSeconds: e.UNREAD_LOG_MAX_AGE_S,
    deadLetterMax: e.UNREAD_DEAD_LETTER_MAX,
    verifyIntervalMs: e.UNREAD_VERIFY_INTERVAL_MS,
    metricsPort: e.UNREAD_METRICS_PORT,
    metricsHost: e.UNREAD_METRICS_HOST,
    verifySampleSize: e.UNREAD_VERIFY_SAMPLE,
    bridgeName: e.UNREAD_BRIDGE_NAME,
    autoMigrate: e.UNREAD_AUTO_MIGRATE,
    source: e.UNREAD_SOURCE,
    supabaseUrl: e.SUPABASE_URL ?? null,
    supabaseServiceRoleKey: e.SUPABASE_SERVICE_ROLE_KEY ?? null,
    realtimeShards: e.UNREAD_REALTIME_SHARDS,
    catchupIntervalMs: e.UNREAD_CATCHUP_INTERVAL_MS,
    logLevel: e.LOG_LEVEL,
  };
}
