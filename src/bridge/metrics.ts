import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ScanPosition, UnreadStore } from '../store/store.js';

/** Bridge metrics, on their own registry so several bridges can live in one test process. */
export class BridgeMetrics {
  readonly registry = new Registry();
  readonly changesApplied = new Counter({ name: 'unread_sync_changes_applied_total', help: 'Changes written to Redis', registers: [this.registry] });
  readonly changesSkipped = new Counter({ name: 'unread_sync_changes_skipped_total', help: 'Duplicate or stale changes ignored by version', registers: [this.registry] });
  readonly changesUnknownUser = new Counter({ name: 'unread_sync_changes_unknown_user_total', help: 'Changes for users not cached (nothing to update)', registers: [this.registry] });
  readonly negativeCounts = new Counter({ name: 'unread_sync_negative_counts_total', help: 'Changes whose source count was negative (clamped to 0)', registers: [this.registry] });
  readonly deadLetters = new Counter({ name: 'unread_sync_dead_letters_total', help: 'Malformed events set aside', registers: [this.registry] });
  readonly hydrations = new Counter({ name: 'unread_sync_hydrations_total', help: 'Users loaded from the database', registers: [this.registry] });
  readonly resets = new Counter({ name: 'unread_sync_resets_total', help: 'Times the whole cache was forgotten (truncate, gap, first start)', registers: [this.registry] });
  readonly cycles = new Counter({ name: 'unread_sync_cycles_total', help: 'Read cycles completed', registers: [this.registry] });
  readonly errors = new Counter({ name: 'unread_sync_bridge_errors_total', help: 'Failed cycles (retried with backoff)', registers: [this.registry] });
  readonly batchSize = new Histogram({ name: 'unread_sync_batch_size', help: 'Events per read cycle', buckets: [0, 1, 10, 100, 1_000, 10_000, 100_000], registers: [this.registry] });
  readonly lag = new Histogram({ name: 'unread_sync_commit_to_apply_seconds', help: 'From the change being written to it being applied in Redis', buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30], registers: [this.registry] });
  readonly verifiedUsers = new Counter({ name: 'unread_sync_verified_users_total', help: 'Cached users compared with the database by the periodic verifier', registers: [this.registry] });
  readonly driftRepairs = new Counter({ name: 'unread_sync_drift_repairs_total', help: 'Users whose cache differed from the database and was repaired (should stay 0)', registers: [this.registry] });
  readonly staleRefused = new Counter({ name: 'unread_sync_stale_writes_refused_total', help: 'Hydrations or repairs Redis refused because the state they would overwrite came from a newer snapshot', registers: [this.registry] });
  readonly prefixConflicts = new Counter({ name: 'unread_sync_prefix_conflicts_total', help: 'Start-ups refused because another bridge name owns the key prefix', registers: [this.registry] });
  readonly rewinds = new Counter({ name: 'unread_sync_database_rewinds_total', help: 'Times the database was found rewound or moved (restore, PITR, failover loss, another cluster): cache reset', registers: [this.registry] });
  readonly captureDisabled = new Gauge({ name: 'unread_sync_capture_triggers_disabled', help: 'Capture triggers on chat_rooms that do not fire on ordinary writes (should be 0)', registers: [this.registry] });
  readonly captureEpisodes = new Counter({ name: 'unread_sync_capture_disabled_total', help: 'Times capture triggers were found disabled (each episode counted once)', registers: [this.registry] });
  readonly partitionSyncs = new Counter({ name: 'unread_sync_partition_syncs_total', help: 'Times unread_sync.sync_partitions() changed something: capture installed on a new partition, or a reset logged for a filled partition attached or a partition removed', registers: [this.registry] });
  readonly reconnects = new Counter({ name: 'unread_sync_source_restarts_total', help: 'Times the source had to be started again (lock lost, connection replaced)', registers: [this.registry] });

  constructor(defaults = false) {
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
