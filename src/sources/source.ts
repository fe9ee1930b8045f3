import type { Registry } from 'prom-client';
import { queries, type DatabaseIdentity, type HydratedRoom, type Sql } from '../db.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import type { Logger } from '../log.js';

export type { DatabaseIdentity, HydratedRoom };

/** What a source hands the bridge for one read cycle, all from one consistent point. */
export interface CycleHandler {
  /**
   * Called first. `gap`: changes were lost before being read; forget every cached user.
   * `snapshot`: the pg_snapshot the cycle reads at (hydrations and changes are stamped with it);
   * absent when the source has none (then nothing is stamped).
   * `readRooms`: reads users' rooms in this same snapshot on other connections, usable while the
   * cycle runs (hydration requests served between chunks of a long drain); absent when the source
   * cannot (then such requests wait for the cycle's end or are read in a newer snapshot).
   */
  begin(context: {
    gap: boolean;
    hydrated: Map<string, HydratedRoom[]>;
    snapshot?: string;
    readRooms?: (userIds: string[]) => Promise<Map<string, HydratedRoom[]>>;
  }): Promise<void>;
  /** Raw, unvalidated events, chunk by chunk, in any order (versions decide what applies). */
  chunk(rows: unknown[]): Promise<void>;
  /** Called last, before the source records the cycle as applied. */
  end(): Promise<void>;
}

/**
 * A change source: where unread changes come from (the Postgres log, Supabase Realtime, ...).
 * The bridge knows only this interface.
 */
export interface ChangeSource {
  readonly name: string;
  /** Most users one cycle may hydrate (a source that reads them in parallel takes more); optional. */
  readonly maxHydratePerCycle?: number;
  /** Connects and takes whatever exclusivity the source needs; resolves once it may read. */
  start(signal: AbortSignal): Promise<void>;
  /**
   * Runs one cycle: the changes not yet acknowledged plus the rooms of `hydrate`, read at one
   * consistent point. The position advances only after `handler.end()` resolved.
   * Returns how many events were delivered.
   */
  cycle(hydrate: string[], handler: CycleHandler): Promise<number>;
  /** Resolves when new changes may be there, or after `timeoutMs`. */
  waitForChanges(timeoutMs: number, signal: AbortSignal): Promise<void>;
  /** Identity and horizons of the database (rewind and move detection); optional. */
  identity?(): Promise<DatabaseIdentity>;
  /**
   * After a rewind or move: drop what belongs to another history and continue from the current
   * snapshot (the bridge resets the cache at the same time); returns that snapshot. Optional.
   */
  restartFromNow?(): Promise<string>;
  /**
   * Brings partitions of chat_rooms under capture without superuser rights (installs the TRUNCATE
   * trigger on new ones, logs a reset when a filled table was attached or one left); optional.
   */
  syncPartitions?(): Promise<{ installed: number; reset: boolean }>;
  /** Capture triggers that do not fire on ordinary writes ("table.trigger (D)"); optional. */
  captureProblems?(): Promise<string[]>;
  /**
   * Records whether capture fires; when it fires again after an episode, logs a reset through
   * the log and returns true. Optional (with captureProblems).
   */
  recordCapture?(firing: boolean): Promise<boolean>;
  /**
   * Reads users' rooms in a fresh snapshot on another connection, while a cycle may be running
   * (hydration must not wait behind a long drain); returns the snapshot for stamping. Optional.
   */
  readHydration?(userIds: string[]): Promise<{ snapshot: string; rooms: Map<string, HydratedRoom[]> }>;
  /** Periodic housekeeping (log retention); runs beside the cycles, never awaited by them; optional. */
  maintain?(): Promise<void>;
  /** Changes committed but not yet acknowledged, for the backlog metric; optional. */
  backlog?(): Promise<number>;
  /** Registers the source's own metrics on the bridge's registry; optional. */
  observe?(registry: Registry): void;
  /** Throws when the source's upstream (database, Realtime) is unreachable; optional. */
  check?(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The source lost what made it the one reader of its bridge's stream (the postgres sources' advisory
 * lock, the Supabase source's lease): another bridge may be active. The bridge restarts the source
 * on any error; this one says why, and the restarted source stands by until it holds it again.
 */
export class SourceLeaseLostError extends UnreadSyncError {
  constructor(kind: 'lock' | 'lease', detail: string) {
    super(ErrorCode.SOURCE_LEASE_LOST, `bridge ${kind} lost (${detail})`);
  }
}

/**
 * Where a starting source reads from: its saved checkpoint, or with none (a first start) the current
 * snapshot, saved at once through `save` (which fences it by the source's lock or lease).
 * `firstStart`: nothing says what Redis holds, so the first cycle must report a gap.
 */
export async function startPosition(
  sql: Sql,
  bridgeName: string,
  log: Logger,
  save: (snapshot: string) => Promise<void>,
): Promise<{ position: string; firstStart: boolean }> {
  const saved = await queries.readCheckpoint(sql, bridgeName);
  if (saved !== null) return { position: saved, firstStart: false };
  // Start from now and forget every cached user: users hydrate on demand.
  const position = await queries.currentSnapshot(sql);
  await save(position);
  log.info({ bridge: bridgeName }, 'first start: cache will be reset, users hydrate on demand');
  return { position, firstStart: true };
}
