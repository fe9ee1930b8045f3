import { z } from 'zod';
import {
  ConfigError,
  clusterNodes,
  clusterNodesSchema,
  envBool as bool,
  envInt as int,
  envUrl as url,
  keyPrefixSchema,
  logLevelSchema,
  parseEnv,
  redisUrlSchema,
} from '../env.js';

// Socket-server settings live apart from the bridge's Config: a socket process needs no DB
// credentials (DATABASE_URL is read only for the demo endpoints).

const schema = z.object({
  PORT: int(0, 65_535, 3000),
  HOST: z
    .string()
    .default('127.0.0.1')
    .refine((v) => /^[A-Za-z0-9.:_-]{1,255}$/.test(v), { error: 'must be a host name or IP address' }),
  REDIS_URL: redisUrlSchema,
  REDIS_CLUSTER_NODES: clusterNodesSchema,
  UNREAD_KEY_PREFIX: keyPrefixSchema,
  // Supabase's legacy HS256 secret; shorter secrets are brute-forceable.
  SUPABASE_JWT_SECRET: z.string().min(32, { error: 'must be at least 32 characters' }).optional(),
  SUPABASE_JWKS_URL: url(['https:', 'http:']).optional(),
  SUPABASE_JWT_AUDIENCE: z.string().min(1).default('authenticated'),
  UNREAD_DEMO: bool(false),
  // Off by default: the socket layer is Redis-only by design; on, reads survive a Redis outage.
  UNREAD_DB_FALLBACK: bool(false),
  UNREAD_DB_FALLBACK_MAX_CONCURRENT: int(1, 1_000, 4),
  DATABASE_URL: url(['postgres:', 'postgresql:']).optional(),
  UNREAD_HYDRATE_TIMEOUT_MS: int(10, 60_000, 3_000),
  UNREAD_SOCKET_COALESCE_MS: int(0, 10_000, 50),
  UNREAD_SOCKET_RECONCILE_MS: int(0, 3_600_000, 5_000),
  UNREAD_SOCKET_CORS_ORIGIN: z.string().optional(),
  LOG_LEVEL: logLevelSchema,
});

type Env = z.output<typeof schema>;

export interface SocketConfig {
  port: number;
  host: string;
  redisUrl: string;
  /** Cluster seed nodes ("host:port"); empty for a single Redis. */
  redisClusterNodes: string[];
  keyPrefix: string;
  jwtSecret: string | undefined;
  jwksUrl: string | undefined;
  jwtAudience: string;
  demo: boolean;
  /** Read badges from the database (capped, behind a circuit breaker) while Redis is down. */
  dbFallback: boolean;
  dbFallbackMaxConcurrent: number;
  /** Only for the demo endpoints; the badge path never touches the database. */
  databaseUrl: string | undefined;
  hydrateTimeoutMs: number;
  coalesceMs: number;
  /** How often connected users are re-checked against Redis (catches wiped keys, lost messages); 0 = never. */
  reconcileIntervalMs: number;
  /** Allowed CORS origins for browsers on other origins; empty = same origin only. */
  corsOrigins: string[];
  logLevel: Env['LOG_LEVEL'];
}

/** Reads and validates the socket server's environment; throws ConfigError naming every bad variable. */
export function loadSocketConfig(env: Record<string, string | undefined> = process.env): SocketConfig {
  const e = parseEnv(schema, env, ['SUPABASE_JWT_SECRET']);
  const issues: string[] = [];
  if (!e.SUPABASE_JWT_SECRET && !e.SUPABASE_JWKS_URL) {
    issues.push('SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL must be set (sockets authenticate with Supabase JWTs)');
  }
  if (e.UNREAD_DEMO && !e.SUPABASE_JWT_SECRET) issues.push('UNREAD_DEMO=true needs SUPABASE_JWT_SECRET (to mint demo tokens)');
  if (e.UNREAD_DB_FALLBACK && !e.DATABASE_URL) issues.push('UNREAD_DB_FALLBACK=true needs DATABASE_URL (the fallback reads chat_rooms)');
  if (e.UNREAD_DEMO && !e.DATABASE_URL) issues.push('UNREAD_DEMO=true needs DATABASE_URL (demo endpoints write chat_rooms)');
  if (issues.length > 0) throw new ConfigError(issues);
  return {
    port: e.PORT,
    host: e.HOST,
    redisUrl: e.REDIS_URL,
    redisClusterNodes: clusterNodes(e.REDIS_URL, e.REDIS_CLUSTER_NODES),
    keyPrefix: e.UNREAD_KEY_PREFIX,
    jwtSecret: e.SUPABASE_JWT_SECRET,
    jwksUrl: e.SUPABASE_JWKS_URL,
    jwtAudience: e.SUPABASE_JWT_AUDIENCE,
    demo: e.UNREAD_DEMO,
    dbFallback: e.UNREAD_DB_FALLBACK,
    dbFallbackMaxConcurrent: e.UNREAD_DB_FALLBACK_MAX_CONCURRENT,
    databaseUrl: e.DATABASE_URL,
    hydrateTimeoutMs: e.UNREAD_HYDRATE_TIMEOUT_MS,
    coalesceMs: e.UNREAD_SOCKET_COALESCE_MS,
    reconcileIntervalMs: e.UNREAD_SOCKET_RECONCILE_MS,
    corsOrigins: (e.UNREAD_SOCKET_CORS_ORIGIN ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    logLevel: e.LOG_LEVEL,
  };
}
