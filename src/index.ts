// Public API of unread-sync.
export { UnreadSyncError, ErrorCode, hasCode } from './errors.js';
export { loadConfig, ConfigError, type Config } from './config.js';
export { connect, type Sql, type SqlClient } from './db.js';
export { parseUserId, InvalidIdError } from './ids.js';
export { createLogger, type Logger } from './log.js';
export { migrate, MIGRATIONS_DIR, MIGRATIONS_TABLE, type MigrateOptions } from './migrate.js';
export { keyLayout, type KeyLayout } from './store/keys.js';
export {
  UnreadStore,
  createRedis,
  parseTotalsMessage,
  type RedisClient,
  type UnreadCounts,
  type BadgeTotals,
  type RoomChange,
  type RoomState,
  snapshotStamp,
  type SnapshotStamp,
} from './store/store.js';
export { matchesTruth, type TruthRoom } from './truth.js';
export { UnreadReader, HydrationTimeoutError, type CountsFallback } from './read/reader.js';
export { DbFallback, FallbackUnavailableError, type DbFallbackOptions } from './read/fallback.js';
export { Bridge, PrefixOwnedError, type BridgeOptions, type BridgeStatus } from './bridge/bridge.js';
export { BridgeMetrics } from './bridge/metrics.js';
export { PostgresSource, type PostgresSourceOptions } from './sources/postgres.js';
export { LogicalSource, LogicalUnavailableError, type LogicalSourceOptions } from './sources/logical.js';
export type { ChangeSource, CycleHandler } from './sources/source.js';
export { parseEvent, changeEventSchema, type ChangeEvent } from './events.js';
export {
  startBridge,
  startServe,
  startLocal,
  startDemo,
  type RunningBridge,
  type RunningServe,
  type RunningLocal,
  type RunningDemo,
  type RunningProcess,
} from './launch.js';
export { rebuildAll, type RebuildReport } from './commands/rebuild.js';
export { verify, BridgeBehindError, type VerifyReport, type Drift } from './commands/verify.js';
export * from './socket/index.js';
export {
  SeedCompatChatSocket,
  RoomNotFoundError,
  InvalidInputError,
  MAX_MARK_UNREAD,
  type SeedCompatOptions,
  type WriteResult,
  type MarkAllResult,
} from './compat/seed-compat.js';
export { seedDemo, DEMO_USERS, DEMO_ROOMS, type DemoUser, type DemoRoom } from './demo/demo.js';
export { UserTopicPublisher, userTopicOf, USER_TOPIC_EVENT, type UserTopicPayload } from './bridge/publish.js';
export { connectUnreadBadgesSupabase, parseSnapshotText, type SupabaseBadgesOptions, type SupabaseLike } from './client/supabase.js';
export type { UnreadState, UnreadListener, UnreadBadgesClient } from './client/types.js';
