import { postgresEndpoint, redactSecrets, redisEndpoint } from './env.js';
import { SqlState, errorCode } from './errors.js';

/**
 * Failed dependency calls as one line each (what is wrong and what to do), never with the URL's
 * credentials. Shared by the CLI, the bridge's runtime and the socket server.
 */

/** The one line to show when the database lacks unread-sync's schema. */
export const NOT_MIGRATED = 'the database is not migrated: run `unread-sync migrate up` (or set UNREAD_AUTO_MIGRATE=true)';

/** Node's socket error codes for a host that cannot be reached. */
const NETWORK_UNREACHABLE = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET'];
/** The same, plus postgres.js's connect timeout and a server starting up or shutting down. */
const UNREACHABLE = new Set([...NETWORK_UNREACHABLE, 'CONNECT_TIMEOUT', SqlState.CANNOT_CONNECT_NOW]);
const REDIS_UNREACHABLE = new Set(NETWORK_UNREACHABLE);
/**
 * Otherwise only the text tells: ioredis rejects commands on a closed connection ("Connection is
 * closed.") and its command timeouts with plain Errors that carry no code, a caller's own ping
 * timeout says "timed out" (whatever code it carries), and an error passed on as text keeps the
 * socket code only in its message.
 */
const REDIS_UNREACHABLE_TEXT =
  /max retries|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|Connection is closed|timed out|ECONNRESET|EHOSTUNREACH/i;

function redisUnreachable(err: unknown, message: string): boolean {
  const code = errorCode(err);
  if (code !== undefined && REDIS_UNREACHABLE.has(code)) return true;
  // ioredis gave up on the command after maxRetriesPerRequest reconnection attempts.
  if ((err as Error | undefined)?.name === 'MaxRetriesPerRequestError') return true;
  return REDIS_UNREACHABLE_TEXT.test(message);
}

/** One line for a failed Redis call: where, and that it is unreachable; never the URL's credentials. */
export function redisProblem(err: unknown, url: string, cluster: string[] = []): string {
  const message = (err as Error).message ?? String(err);
  if (redisUnreachable(err, message)) {
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
  // The server names the missing relation only in its message (42P01 carries no table field).
  if (e.code === SqlState.UNDEFINED_TABLE && /unread_sync/.test(e.message ?? '')) return NOT_MIGRATED;
  return redactSecrets(`Postgres at ${postgresEndpoint(url)}: ${e.message ?? String(err)}`);
}
