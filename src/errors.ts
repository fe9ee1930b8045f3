// One error model: every error unread-sync raises on purpose is an UnreadSyncError with a stable
// `code`. Callers branch on `code` (or `instanceof`), never on message text, which may change.

export const ErrorCode = {
  /** A configuration variable is missing or invalid (the message names every bad variable). */
  CONFIG_INVALID: 'CONFIG_INVALID',
  /** A user or room id failed validation. */
  INVALID_ID: 'INVALID_ID',
  /** Any other input (a mark count, an HTTP body) failed validation. */
  INVALID_INPUT: 'INVALID_INPUT',
  /** A socket or HTTP caller's token is missing, expired or invalid. */
  UNAUTHORIZED: 'UNAUTHORIZED',
  /** A room does not exist or is not the caller's. */
  ROOM_NOT_FOUND: 'ROOM_NOT_FOUND',
  /** Another bridge name already owns this key prefix. */
  PREFIX_OWNED: 'PREFIX_OWNED',
  /** A source lost the lock or lease that made it the one reader of its bridge's stream. */
  SOURCE_LEASE_LOST: 'SOURCE_LEASE_LOST',
  /** UNREAD_SOURCE=logical was asked for, but logical decoding is not available. */
  LOGICAL_UNAVAILABLE: 'LOGICAL_UNAVAILABLE',
  /** No bridge hydrated a user in time. */
  HYDRATION_TIMEOUT: 'HYDRATION_TIMEOUT',
  /** Redis is down and no database fallback is configured (or it failed too). */
  FALLBACK_UNAVAILABLE: 'FALLBACK_UNAVAILABLE',
  /** The bridge did not reach a verification snapshot in time. */
  BRIDGE_BEHIND: 'BRIDGE_BEHIND',
  /** A command needs a running bridge and none is live. */
  NO_LIVE_BRIDGE: 'NO_LIVE_BRIDGE',
  /** A migration gave up waiting for a table lock (an open transaction holds chat_rooms), after every retry. */
  MIGRATION_LOCKED: 'MIGRATION_LOCKED',
  /** A bridge cycle made no progress for its timeout and was abandoned (the source restarts). */
  CYCLE_STALLED: 'CYCLE_STALLED',
  /** Applying or rolling back migrations failed (the message says why). */
  MIGRATION_FAILED: 'MIGRATION_FAILED',
  /** The database has no (or not every) unread-sync migration applied. */
  NOT_MIGRATED: 'NOT_MIGRATED',
  /** Redis cannot be reached (or did not answer in time). */
  REDIS_UNAVAILABLE: 'REDIS_UNAVAILABLE',
  /** Postgres cannot be reached, or refused the connection. */
  POSTGRES_UNAVAILABLE: 'POSTGRES_UNAVAILABLE',
  /** The caller is known but may not do this (e.g. a demo endpoint asked for a non-demo user). */
  FORBIDDEN: 'FORBIDDEN',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class UnreadSyncError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * SQLSTATE codes unread-sync branches on (both drivers, postgres.js and pg, set `code` on every
 * server error). https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export const SqlState = {
  /** undefined_table: a relation (e.g. unread_sync.bridge_state) does not exist. */
  UNDEFINED_TABLE: '42P01',
  /** undefined_function: e.g. unread_sync.sync_partitions() on a database migrated before it existed. */
  UNDEFINED_FUNCTION: '42883',
  /** lock_not_available: lock_timeout expired (or NOWAIT). */
  LOCK_NOT_AVAILABLE: '55P03',
  /** cannot_connect_now: the server is starting up or shutting down. */
  CANNOT_CONNECT_NOW: '57P03',
} as const;

/** The `code` an error carries (a Node socket error, a driver's code, a SQLSTATE), if it has one. */
export function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Whether `err` is an unread-sync error with this code (works across module copies, unlike instanceof). */
export function hasCode(err: unknown, code: ErrorCode): err is UnreadSyncError {
  return err instanceof Error && (err as { code?: unknown }).code === code;
}
