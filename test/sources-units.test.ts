/**
 * Service-free unit tests for the sources' pure logic: pg_snapshot arithmetic, the reconnect
 * backoff, the live-miss check and the Realtime quota back-off (fake clock).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../src/log.js';
import { backoffDelay } from '../src/backoff.js';
import { LIVE_SEEN_MAX, LiveMisses } from '../src/sources/catchup.js';
import { RealtimeHealth } from '../src/sources/realtime-health.js';
import { parseSnapshot, visibleIn, widenXid, xidVisibleIn } from '../src/sources/snapshot.js';

const log = createLogger('silent');

describe('snapshot arithmetic', () => {
  it('parses xmin:xmax:xip and refuses anything else', () => {
    expect(parseSnapshot('100:110:102,105')).toEqual({ xmin: 100n, xmax: 110n, xip: new Set([102n, 105n]) });
    expect(parseSnapshot('7:7:').xip.size).toBe(0);
    for (const bad of ['', '1:2', 'a:b:', '1:2:x', ' 1:2:']) expect(() => parseSnapshot(bad)).toThrow(/not a pg_snapshot/);
  });

  it('visibleIn: below xmin visible, from xmax on not, in between unless in progress', () => {
    const s = parseSnapshot('100:110:102,105');
    const visible = [99n, 100n, 101n, 102n, 103n, 105n, 109n, 110n, 111n].filter((x) => visibleIn(x, s));
    expect(visible).toEqual([99n, 100n, 101n, 103n, 109n]);
  });

  it('widens a 32-bit xid into the epoch of xmax, across a wraparound', () => {
    const epoch1 = 1n << 32n;
    expect(widenXid(5, epoch1 + 10n)).toBe(epoch1 + 5n);
    // Just before the wrap, seen from just after it: the previous epoch.
    expect(widenXid(0xfffffff0, epoch1 + 10n)).toBe(epoch1 - 16n);
    // A 32-bit xid a little past xmax stays in xmax's epoch (not yet visible).
    expect(widenXid(20, epoch1 + 10n)).toBe(epoch1 + 20n);
  });

  // test/logical.test.ts covers the plain and wrapped cases; here, xip and xmin after a wrap.
  it('xidVisibleIn: an in-progress xid after the wrap, and xids below xmin', () => {
    const s = `${2n ** 32n - 50n}:${2n ** 32n + 10n}:${2n ** 32n + 5n}`;
    expect([5, 6, 0xfffffff0, 0xffffff00].map((x) => xidVisibleIn(x, s))).toEqual([false, true, true, true]);
  });
});

describe('backoffDelay', () => {
  it('doubles from the base to the cap; half fixed, half jitter', () => {
    const low = (attempt: number) => backoffDelay(attempt, 1_000, 30_000, () => 0);
    const high = (attempt: number) => backoffDelay(attempt, 1_000, 30_000, () => 1);
    expect([0, 1, 2, 3, 4, 5, 6].map(low)).toEqual([500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000]);
    expect([0, 1, 2, 3, 4, 5, 6].map(high)).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
    // Huge attempt counts do not overflow to Infinity.
    expect(backoffDelay(10_000, 1_000, 30_000, () => 0.5)).toBe(22_500);
  });
});

describe('LiveMisses', () => {
  it('counts the rows one catch-up read that had not arrived live by the next one', () => {
    const m = new LiveMisses();
    expect(m.settle(['a', 'b', 'c'])).toEqual({ checked: 0, missed: 0 });
    m.note({ id: 'a' });
    m.note({ id: 'c' });
    m.note('not an event');
    m.note({ id: 42 });
    expect(m.settle(['d'])).toEqual({ checked: 3, missed: 1 });
    // A live copy counts once: 'a' is gone from the record after it matched.
    expect(m.settle(['a'])).toEqual({ checked: 1, missed: 1 });
  });

  it('says nothing for a round whose live record overflowed', () => {
    const m = new LiveMisses();
    m.settle(['x']);
    for (let i = 0; i <= LIVE_SEEN_MAX; i++) m.note({ id: String(i) });
    expect(m.settle([])).toBeNull();
    expect(m.settle([])).toEqual({ checked: 0, missed: 0 });
  });
});

describe('RealtimeHealth quota back-off', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('pauses a window (plus jitter), doubles up to 4 windows while the limit recurs, ends the episode a window after', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const health = new RealtimeHealth({ windowMs: 60_000, log, random: () => 0 });
    const t0 = Date.now();
    expect(health.onRateLimited('Too many messages per second')).toBe(t0 + 60_000);
    // Other topics shut in the same pause: same resume time.
    vi.advanceTimersByTime(1_000);
    expect(health.onRateLimited('Too many messages per second')).toBe(t0 + 60_000);
    expect(health.rateLimited()).toBe(true);
    expect(health.problems()[0]).toMatch(/rate-limited/);

    vi.setSystemTime(t0 + 60_000);
    expect(health.onRateLimited('again')).toBe(t0 + 60_000 + 120_000);
    vi.setSystemTime(t0 + 180_000);
    expect(health.onRateLimited('again')).toBe(t0 + 180_000 + 240_000);
    vi.setSystemTime(t0 + 420_000);
    expect(health.onRateLimited('again')).toBe(t0 + 420_000 + 240_000);
    expect(health.counts).toEqual({ episodes: 1, shutdowns: 5 });

    // Live again, but the episode lasts one window past the pause.
    health.settle(true);
    expect(health.rateLimited()).toBe(true);
    vi.setSystemTime(t0 + 660_000 + 60_000);
    health.settle(false);
    expect(health.rateLimited()).toBe(true);
    health.settle(true);
    expect(health.rateLimited()).toBe(false);
    expect(health.problems()).toEqual([]);

    // A new episode starts from one window again.
    expect(health.onRateLimited('Too many messages per second')).toBe(Date.now() + 60_000);
    expect(health.counts.episodes).toBe(2);
  });
});
