import { postgresEndpoint, redactSecrets, redisEndpoint } from './env.js';

/**
 * Failed dependency calls as one line each (what is wrong and what to do), never with the URL's
 * credentials. Shared by the CLI, the bridge's runtime and the socket server.
 */

/** The one line to show when the database lacks unread-sync's schema. */
export const NOT_MIGRATED =
  'the database is not migrated: run `unread-sync migrate up` (or set UNREAD_AUTO_MIGRATE=true)';

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET', 'CONNECT_TIMEOUT', '57P03']);

/** One line for a failed Redis call: where, and that it is unreachable; never the URL's credentials. */
export function redisProblem(err: unknown, url: string, cluster: string[] = []): string {
  const message = (err as Error).message ?? String(err);
  if (/max retries|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|Connection is closed|timed out|ECONNRESET|EHOSTUNREACH/i.test(message)) {
    return `Redis at ${redisEndpoint(url, cluster)} is unreachable (check REDIS_URL, and that Redis runs)`;
  }
  return redactSecrets(`Redis at ${redisEndpoint(url, cluster)}: ${message}`);
}

/** One line for a failed Postgres call: unreachable, not migrated, or the server's own message. */
export function postgresProblem(err: unknown, url: string): string {
  const e = err as { code?: string; message?: string; errors?: { code?: string }[] };
  const codes = [e.code, ...(e.errors ?? []).map((x) => x.code)];
  if (codes.some((c) => c && UNREACHABLE.has(c))) {
    return `Postgres at ${postgresEndpoint(url)} is unreachable (check DATABASE_URL, and that Postgres runs)`;
  }
  if (e.code === '42P01' && /unread_sync/.test(e.message ?? '')) return NOT_MIGRATED;
  return redactSecrets(`Postgres at ${postgresEndpoint(url)}: ${e.message ?? String(err)}`);
}
