import { Gauge, type Counter, type Registry } from 'prom-client';
import type { Logger } from '../log.js';
import { counter } from './metrics.js';

/**
 * What the Realtime server said when it shut a channel over the project's message quota. Its system
 * message ({extension: 'system', status: 'error', message, channel}) carries no code or type, so the
 * text is all there is to tell this shutdown from the others.
 */
export const RATE_LIMIT_MESSAGE = /Too many messages per second/i;

/**
 * The parts of Supabase Realtime's state that decide whether its live path works, seen from the
 * bridge: the message quota (rate-limit episodes and the back-off they impose), the daily
 * partitions of realtime.messages, and whether the broadcast was installed at all. Readiness and
 * metrics read it; the source feeds it.
 */
export class RealtimeHealth {
  /** Until when shut topics stay down (ms epoch). */
  private limitedUntil = 0;
  private episodeOpen = false;
  private backoffsInEpisode = 0;
  private missingPartitions: string[] = [];
  private partitionsCheckedAt = 0;
  private partitionError: string | null = null;
  readonly counts = { episodes: 0, shutdowns: 0 };
  private episodesMetric: Counter | null = null;
  private missedMetric: Counter | null = null;
  private checkedMetric: Counter | null = null;

  constructor(
    private readonly options: {
      /** The quota's averaging window: a rejoin sooner only meets the same average (real: 60 s). */
      windowMs: number;
      log: Logger;
      random?: () => number;
    },
  ) {}

  /**
   * A topic was shut with "Too many messages per second". Returns when it may be joined again:
   * at least one averaging window from the first shutdown of this back-off (the counter still
   * holds the burst), doubling (up to 4 windows) when rejoining met the limit again. Logged once
   * per episode.
   */
  onRateLimited(message: string): number {
    const now = Date.now();
    this.counts.shutdowns++;
    if (!this.episodeOpen) {
      this.episodeOpen = true;
      this.backoffsInEpisode = 0;
      this.counts.episodes++;
      this.episodesMetric?.inc();
    }
    if (now >= this.limitedUntil) {
      const base = this.options.windowMs * 2 ** Math.min(this.backoffsInEpisode, 2);
      this.limitedUntil = now + Math.round(base * (1 + 0.25 * (this.options.random ?? Math.random)()));
      if (this.backoffsInEpisode === 0) {
        this.options.log.warn(
          { message, resumeAt: new Date(this.limitedUntil).toISOString(), windowMs: this.options.windowMs },
          'realtime: project over its message quota; live topics paused, catch-up only until the quota window passes',
        );
      }
      this.backoffsInEpisode++;
    }
    return this.limitedUntil;
  }

  /** Called with every topic live: the episode ends once a whole window passed since the back-off. */
  settle(allLive: boolean): void {
    if (!this.episodeOpen || !allLive) return;
    if (Date.now() < this.limitedUntil + this.options.windowMs) return;
    this.episodeOpen = false;
    this.options.log.info({ backoffs: this.backoffsInEpisode }, 'realtime: message quota episode over, live path back');
  }

  /** A catch-up compared `checked` rows with what arrived live; `missed` never did. */
  onLiveCheck(checked: number, missed: number): void {
    if (checked > 0) this.checkedMetric?.inc(checked);
    if (missed > 0) this.missedMetric?.inc(missed);
  }

  rateLimited(): boolean {
    return this.episodeOpen;
  }

  resumeAt(): number {
    return this.limitedUntil;
  }

  /** Result of a partition check: the days (YYYY-MM-DD) among today/tomorrow with no partition. */
  setPartitions(missing: string[] | null, error: string | null = null): void {
    const before = this.missingPartitions.join(',');
    if (missing) this.missingPartitions = missing;
    this.partitionError = error;
    this.partitionsCheckedAt = Date.now();
    if (missing && missing.join(',') !== before) {
      if (missing.length > 0) {
        this.options.log.error(
          { missing },
          'realtime.messages has no partition for these days: realtime.send() only logs a WARNING and every broadcast is lost (catch-up only). Create them (supabase/README.md)',
        );
      } else if (before) {
        this.options.log.info('realtime.messages partitions for today and tomorrow exist again');
      }
    }
  }

  /** Readiness problems, as sentences; empty when the live path should work. */
  problems(): string[] {
    const out: string[] = [];
    if (this.episodeOpen) {
      out.push(
        `rate-limited, catch-up only: Realtime shut topics with "Too many messages per second"; ` +
          `live topics resume at ${new Date(this.limitedUntil).toISOString()}`,
      );
    }
    if (this.missingPartitions.length > 0) {
      out.push(`realtime.messages has no partition for ${this.missingPartitions.join(', ')}: broadcasts are dropped, catch-up only`);
    }
    if (this.partitionError) out.push(`partition check failed: ${this.partitionError}`);
    return out;
  }

  /** Metrics on the bridge's registry. */
  observe(registry: Registry): void {
    const self = this;
    new Gauge({
      name: 'unread_sync_realtime_rate_limited',
      help: '1 while Supabase Realtime rate-limits the project (topics paused, catch-up only)',
      registers: [registry],
      collect() {
        this.set(self.episodeOpen ? 1 : 0);
      },
    });
    this.episodesMetric = counter(
      registry,
      'unread_sync_realtime_rate_limit_episodes_total',
      'Episodes of "Too many messages per second" from Supabase Realtime',
    );
    this.episodesMetric.inc(this.counts.episodes);
    this.missedMetric = counter(
      registry,
      'unread_sync_realtime_live_missed_total',
      'Log rows a catch-up applied that never arrived over Realtime (quota drops, missing partition, replication gap, at-most-once loss)',
    );
    this.checkedMetric = counter(
      registry,
      'unread_sync_realtime_live_checked_total',
      'Log rows compared with what arrived over Realtime (denominator of live_missed_total)',
    );
    new Gauge({
      name: 'unread_sync_realtime_partitions_missing',
      help: 'Days among today and tomorrow (UTC) with no realtime.messages partition (-1: not checked)',
      registers: [registry],
      collect() {
        this.set(self.partitionsCheckedAt === 0 || self.partitionError ? -1 : self.missingPartitions.length);
      },
    });
  }
}
