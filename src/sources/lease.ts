import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { supabaseQueries, type Sql } from '../db.js';
import type { Logger } from '../log.js';
import { sleep } from '../sleep.js';
import { backoffDelay } from '../backoff.js';
import { SourceLeaseLostError } from './source.js';

export interface BridgeLeaseOptions {
  bridgeName: string;
  /** How long the lease lasts unrenewed; renewed every third of it. */
  ttlMs: number;
  log: Logger;
  random: () => number;
  /** Called once when renewal finds the lease taken (or unrenewable past its expiry). */
  onLost: (reason: string) => void;
}

/**
 * A lease on the bridge name in unread_sync.bridge_lease: the one-reader guarantee for a source
 * that cannot hold a session lock (a transaction-mode pooler). Checkpoint writes are fenced by it.
 */
export class BridgeLease {
  private readonly holder = `${hostname()}:${process.pid}:${randomUUID()}`;
  private timer: NodeJS.Timeout | null = null;
  private validUntil = 0;
  private stopped = false;
  /** Why the lease was lost; null while it is held. */
  lost: string | null = null;

  constructor(
    private readonly sql: Sql,
    private readonly options: BridgeLeaseOptions,
  ) {}

  /** Stands by until the lease is free, takes it and keeps renewing it. */
  async acquire(signal: AbortSignal): Promise<void> {
    const { log, bridgeName, ttlMs } = this.options;
    this.stopped = false;
    this.lost = null;
    let announced = false;
    while (!(await supabaseQueries.acquireLease(this.sql, bridgeName, this.holder, ttlMs))) {
      if (!announced) log.info({ bridge: bridgeName }, 'another bridge holds the lease; standing by');
      announced = true;
      await sleep(backoffDelay(2, 500, 2_000, this.options.random), signal);
      if (signal.aborted) throw new Error('aborted while standing by');
    }
    this.validUntil = Date.now() + ttlMs;
    this.armRenewal();
  }

  /** Throws SourceLeaseLostError once the lease is lost. */
  check(): void {
    if (this.lost) throw new SourceLeaseLostError('lease', this.lost);
  }

  /** Saves the checkpoint only while this holder has the lease; throws SourceLeaseLostError otherwise. */
  async saveCheckpoint(snapshot: string): Promise<void> {
    if (!(await supabaseQueries.saveCheckpointLeased(this.sql, this.options.bridgeName, this.holder, snapshot))) {
      this.lost = 'checkpoint refused: lease not held';
      this.check();
    }
  }

  /** Stops renewing (the source is stopping); release() then frees the lease for a standby. */
  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  async release(): Promise<void> {
    if (!this.lost) await supabaseQueries.releaseLease(this.sql, this.options.bridgeName, this.holder).catch(() => {});
  }

  private armRenewal(): void {
    const { bridgeName, ttlMs } = this.options;
    this.clearTimer();
    this.timer = setInterval(
      () => {
        supabaseQueries
          .acquireLease(this.sql, bridgeName, this.holder, ttlMs)
          .then((held) => {
            if (held) this.validUntil = Date.now() + ttlMs;
            else this.lose('taken over by another bridge');
          })
          .catch((err: unknown) => {
            // The database is unreachable: the lease holds until it expires, then assume it lost.
            if (Date.now() > this.validUntil) this.lose(`renewal failed: ${(err as Error).message}`);
          });
      },
      Math.max(100, Math.floor(ttlMs / 3)),
    );
    this.timer.unref();
  }

  private lose(reason: string): void {
    if (this.lost || this.stopped) return;
    this.lost = reason;
    this.clearTimer();
    this.options.log.warn({ reason }, 'bridge lease lost; stopping live delivery');
    this.options.onLost(reason);
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
