import { z } from 'zod';
import { ErrorCode, UnreadSyncError } from './errors.js';

/** Raised when the environment is wrong; `issues` holds one readable line per bad variable. */
export class ConfigError extends UnreadSyncError {
  constructor(readonly issues: string[]) {
    super(ErrorCode.CONFIG_INVALID, `invalid configuration:\n  - ${issues.join('\n  - ')}`);
  }
}

// Schema pieces of the settings table (src/config.ts).

export const envInt = (min: number, max: number, fallback: number) =>
  z.coerce
    .number({ error: 'must be a number' })
    .int({ error: 'must be a whole number' })
    .min(min, { error: `must be at least ${min}` })
    .max(max, { error: `must be at most ${max}` })
    .default(fallback);

export const envUrl = (schemes: string[]) =>
  z.string().refine(
    (value) => {
      try {
        return schemes.includes(new URL(value).protocol);
      } catch {
        return false;
      }
    },
    { error: `must be a URL starting with ${schemes.map((s) => `${s}//`).join(' or ')}` },
  );

export const envBool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'], { error: 'must be true or false' })
    .optional()
    .transform((v) => (v === undefined ? fallback : ['true', '1', 'yes', 'on'].includes(v)));

/** A string matching `pattern`, with `error` as the message otherwise. */
export const envMatch = (pattern: RegExp, error: string) => z.string().refine((v) => pattern.test(v), { error });

/** Comma-separated list, blanks dropped; unset = empty. */
export const envList = () =>
  z
    .string()
    .optional()
    .transform((v) =>
      (v ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );

/** The seed nodes of a `redis+cluster://h:p,h:p/...` URL (the URL parser does not take a host list). */
export function clusterNodesOf(url: string): string[] {
  if (url.startsWith('redis+cluster://')) return (url.slice('redis+cluster://'.length).split('/')[0] ?? '').split(',');
  return [];
}

/**
 * Parses `env` with `schema`; empty strings count as unset (as in most .env tooling). Every bad
 * variable is named in one ConfigError; values of `secrets` are never echoed.
 */
export function parseEnv<S extends z.ZodObject>(schema: S, env: Record<string, string | undefined>, secrets: string[] = []): z.output<S> {
  const input = Object.fromEntries(Object.keys(schema.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]));
  const parsed = schema.safeParse(input);
  const ignored = 'REDIS_URL' in schema.shape ? LEGACY_REDIS_VARS.filter((k) => env[k]) : [];
  if (parsed.success && ignored.length === 0) return parsed.data;
  throw new ConfigError([
    ...(ignored.length > 0
      ? [
          `${ignored.join(', ')} ${ignored.length > 1 ? 'are' : 'is'} not read (a silent fallback would talk to another Redis):` +
            ' put host, port and password in REDIS_URL (see unread-sync --help) and unset them',
        ]
      : []),
    ...(parsed.success ? [] : parsed.error.issues).map((i) => {
      const name = String(i.path[0] ?? '?');
      const shown = secrets.includes(name) ? '[redacted]' : redactSecrets(JSON.stringify(input[name] ?? null), env);
      return `${name} ${i.message} (got ${shown})`;
    }),
  ]);
}

/** The seed's separate Redis settings: refused, REDIS_URL is the one way to say where Redis is. */
const LEGACY_REDIS_VARS = ['REDIS_HOST', 'REDIS_PORT', 'REDIS_PASSWORD'];

/** Environment variables whose values are credentials wherever they appear. */
const SECRET_VARS = ['SUPABASE_SERVICE_ROLE_KEY', 'SUPABASE_JWT_SECRET', 'REDIS_PASSWORD', 'PGPASSWORD'];
const URL_VARS = ['DATABASE_URL', 'REDIS_URL', 'TEST_DATABASE_URL', 'TEST_REDIS_URL'];

function urlPassword(value: string): string | null {
  // Not URL(): a value with a bad scheme or shape must still give up its password.
  const m = /^[^:/?#]*:\/\/[^/?#@]*?:([^@/?#]*)@/.exec(value) ?? /\/\/[^/@\s]*?:([^@\s]*)@/.exec(value);
  return m?.[1] ? m[1] : null;
}

function secretValues(env: Record<string, string | undefined>): string[] {
  const values = new Set<string>();
  for (const k of SECRET_VARS) if (env[k]) values.add(env[k]);
  for (const k of URL_VARS) {
    const pw = env[k] ? urlPassword(env[k]) : null;
    if (!pw) continue;
    values.add(pw);
    try {
      values.add(decodeURIComponent(pw));
    } catch {
      // not percent-encoded: the raw form is enough
    }
  }
  // Very short values would mangle ordinary words; such passwords are not worth hiding anyway.
  return [...values].filter((v) => v.length >= 3).sort((a, b) => b.length - a.length);
}

/**
 * Removes credentials from text meant for a terminal or a log: the password of every URL
 * (user:password@host) and the value of every secret variable of `env`, wherever it appears.
 */
export function redactSecrets(text: string, env: Record<string, string | undefined> = process.env): string {
  return secretScrubber(env)(text);
}

/** redactSecrets with the secret values of `env` looked up once (for a logger's every line). */
export function secretScrubber(env: Record<string, string | undefined> = process.env): (text: string) => string {
  const values = secretValues(env);
  return (text) => {
    let out = text.replace(/(\/\/[^/@\s:]*):[^@\s/]*@/g, '$1:[redacted]@');
    for (const value of values) out = out.split(value).join('[redacted]');
    return out;
  };
}

/** "host:port" (or the cluster's seed list) of a Redis URL, without credentials, for messages. */
export function redisEndpoint(url: string, cluster: string[] = []): string {
  if (cluster.length > 0) return cluster.join(',');
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '6379'}`;
  } catch {
    return '(unparseable REDIS_URL)';
  }
}

/** "host:port" of a Postgres URL, without credentials. */
export function postgresEndpoint(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}`;
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}
