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
  /** Another migration holds the migration lock. */
  MIGRATION_LOCKED: 'MIGRATION_LOCKED',
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

/** Whether `err` is an unread-sync error with this code (works across module copies, unlike instanceof). */
export function hasCode(err: unknown, code: ErrorCode): err is UnreadSyncError {
  return err instanceof Error && (err as { code?: unknown }).code === code;
}
