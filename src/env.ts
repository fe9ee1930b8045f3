import { z } from 'zod';

/** Raised when the environment is wrong; `issues` holds one readable line per bad variable. */
export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid configuration:\n  - ${issues.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

// Schema pieces shared by the bridge's and the socket server's configuration.

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

/** Key prefixes end up in every Redis key; braces would break cluster hash tags. */
export const keyPrefixSchema = z
  .string()
  .default('unread:')
  .refine((v) => /^[A-Za-z0-9_.:-]{1,64}$/.test(v), { error: 'must be 1-64 characters of letters, digits, _ . : -' });

export const redisUrlSchema = envUrl(['redis:', 'rediss:', 'redis+cluster:']).default('redis://127.0.0.1:6379');

/** Seed nodes of a Redis Cluster, "host:port,host:port"; REDIS_URL=redis+cluster://h:p,h:p works too. */
export const clusterNodesSchema = z
  .string()
  .optional()
  .refine((v) => v === undefined || v.split(',').every((n) => /^[A-Za-z0-9_.-]+:\d{1,5}$/.test(n.trim())), {
    error: 'must be a comma-separated list of host:port',
  });

export const logLevelSchema = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info');

export function clusterNodes(url: string, list: string | undefined): string[] {
  if (list) return list.split(',').map((n) => n.trim());
  // The URL parser does not take a host list, so read it by hand.
  if (url.startsWith('redis+cluster://')) return url.slice('redis+cluster://'.length).split('/')[0]!.split(',');
  return [];
}

/**
 * Parses `env` with `schema`; empty strings count as unset (as in most .env tooling). Every bad
 * variable is named in one ConfigError; values of `secrets` are never echoed.
 */
export function parseEnv<S extends z.ZodObject>(
  schema: S,
  env: Record<string, string | undefined>,
  secrets: string[] = [],
): z.output<S> {
  const input = Object.fromEntries(Object.keys(schema.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]));
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((i) => {
      const name = String(i.path[0] ?? '?');
      const shown = secrets.includes(name) ? '[redacted]' : JSON.stringify(input[name] ?? null);
      return `${name} ${i.message} (got ${shown})`;
    }),
  );
}
