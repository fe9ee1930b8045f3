import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ScanPosition, UnreadStore } from '../store/store.js';

type Make<T> = (registry: Registry) => T;
const counter =
  (name: string, help: string): Make<Counter> =>
  (registry) =>
    new Counter({ name, help, registers: [registry] });
const gauge =
  (name: string, help: string): Make<Gauge> =>
  (registry) =>
    new Gauge({ name, help, registers: [registry] });
const histogram =
  (name: string, help: string, buckets: number[]): Make<Histogram> =>
  (registry) =>
    new Histogram({ name, help, buckets, registers: [registry] });

/** The bridge's metrics by field name, in the order they are registered (and exposed). */
const METRICS = {
  changesApplied: counter('unread_sync_changes_applied_total', 'Changes written to Redis'),
  changesSkipped: counter('unread_sync_changes_skipped_total', 'Duplicate or stale changes ignored by version'),
  changesUnknownUser: counter('unread_sync_changes_unknown_user_total', 'Changes for users not cached (nothing to update)'),
  negativeCounts: counter('unread_sync_negative_counts_total', 'Changes whose source count was negative (clamped to 0)'),
  deadLetters: counter('unread_sync_dead_letters_total', 'Malformed events set aside'),
  hydrations: counter('unread_sync_hydrations_total', 'Users loaded from the database'),
  resets: counter('unread_sync_resets_total', 'Times the whole cache was forgotten (truncate, gap, first start)'),
  cycles: counter('unread_sync_cycles_total', 'Read cycles completed'),
  errors: counter('unread_sync_bridge_errors_total', 'Failed cycles (retried with backoff)'),
  batchSize: histogram('unread_sync_batch_size', 'Events per read cycle', [0, 1, 10, 100, 1_000, 10_000, 100_000]),
  lag: histogram(
    'unread_sync_commit_to_apply_seconds',
    'From the change being written to it being applied in Redis',
    [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
  ),
  verifiedUsers: counter('unread_sync_verified_users_total', 'Cached users compared with the database by the periodic verifier'),
  driftRepairs: counter('unread_sync_drift_repairs_total', 'Users whose cache differed from the database and was repaired (should stay 0)'),
  staleRefused: counter(
    'unread_sync_stale_writes_refused_total',
    'Hydrations or repairs Redis refused because the state they would overwrite came from a newer snapshot',
  ),
  prefixConflicts: counter('unread_sync_prefix_conflicts_total', 'Start-ups refused because another bridge name owns the key prefix'),
  rewinds: counter(
    'unread_sync_database_rewinds_total',
    'Times the database was found rewound or moved (restore, PITR, failover loss, another cluster): cache reset',
  ),
  captureDisabled: gauge(
    'unread_sync_capture_triggers_disabled',
    'Capture triggers on chat_rooms that do not fire on ordinary writes (should be 0)',
  ),
  captureEpisodes: counter('unread_sync_capture_disabled_total', 'Times capture triggers were found disabled (each episode counted once)'),
  partitionSyncs: counter(
    'unread_sync_partition_syncs_total',
    'Times unread_sync.sync_partitions() changed something: capture installed on a new partition, or a reset logged for a filled partition attached or a partition removed',
  ),
  reconnects: counter('unread_sync_source_restarts_total', 'Times the source had to be started again (lock lost, connection replaced)'),
};

type Metrics = { readonly [K in keyof typeof METRICS]: ReturnType<(typeof METRICS)[K]> };

// The fields of METRICS, declared by this interface and set by the constructor from the table.
export interface BridgeMetrics extends Metrics {}

/** Bridge metrics, on their own registry so several bridges can live in one test process. */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the constructor assigns every field the interface declares
export class BridgeMetrics {
  readonly registry = new Registry();

  constructor(defaults = false) {
    for (const [field, make] of Object.entries(METRICS)) Object.assign(this, { [field]: make(this.registry) });
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }

  /** Log backlog, read when scraped (one count query on the log). */
  observeBacklog(read: () => Promise<number>): void {
    new Gauge({
      name: 'unread_sync_log_backlog',
      help: 'Log rows committed but past the durable checkpoint',
      registers: [this.registry],
      async collect() {
        this.set(await read().catch(() => -1));
      },
    });
  }

  /** Redis memory (the seed's "memory monitoring"), read when scraped. */
  observeRedis(store: UnreadStore): void {
    new Gauge({
      name: 'unread_sync_redis_used_memory_bytes',
      help: 'used_memory of Redis, summed over masters',
      registers: [this.registry],
      async collect() {
        this.set(await store.usedMemory().catch(() => -1));
      },
    });
    const position: ScanPosition = { node: 0, cursor: '0' };
    new Gauge({
      name: 'unread_sync_redis_bytes_per_user',
      help: 'MEMORY USAGE of a user hash, averaged over a rolling sample of cached users',
      registers: [this.registry],
      async collect() {
        this.set(await store.sampleBytesPerUser(position, 20).catch(() => -1));
      },
    });
  }
}
