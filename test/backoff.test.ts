// Service-free: the start-up wait (startWhenReady), on fake timers.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startWhenReady } from '../src/backoff.js';

function quietLog() {
  return { info: vi.fn(), warn: vi.fn() };
}

describe('startWhenReady', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.spyOn(Math, 'random').mockReturnValue(1); // no jitter: each wait is the full backoff
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  it('runs steps in order, retrying each with backoff doubling from 250 ms to 5 s', async () => {
    const calls: number[] = [];
    let failures = 7;
    const steps = [
      {
        run: async () => {
          calls.push(Date.now());
          if (failures-- > 0) throw new Error('redis down');
        },
      },
      { run: async () => void calls.push(-1) },
    ];
    const log = quietLog();
    const status = { reason: 'starting' as string | null };
    const started = Date.now();
    const ready = startWhenReady(steps, new AbortController().signal, log, status);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(await ready).toBe(true);
    const gaps = calls.slice(1, -1).map((at, i) => at - (calls[i] as number));
    expect(gaps).toEqual([250, 500, 1_000, 2_000, 4_000, 5_000, 5_000]);
    expect(calls.at(-1)).toBe(-1);
    expect(calls[0]).toBe(started);
    expect(status.reason).toBeNull();
    // Each distinct reason is logged once, and the start once the wait is over.
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(log.warn).toHaveBeenCalledWith('waiting: redis down (retrying)');
    expect(log.info).toHaveBeenCalledWith('dependencies are up: starting');
  });

  it('says what it waits for while it waits, and logs a new reason again', async () => {
    const reasons = ['postgres down', 'postgres down', 'not migrated'];
    const status = { reason: null as string | null };
    const log = quietLog();
    const ready = startWhenReady(
      [
        {
          run: async () => {
            const r = reasons.shift();
            if (r) throw new Error(r);
          },
        },
      ],
      new AbortController().signal,
      log,
      status,
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(status.reason).toBe('postgres down');
    await vi.advanceTimersByTimeAsync(250 + 500);
    expect(status.reason).toBe('not migrated');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await ready).toBe(true);
    expect(log.warn.mock.calls.map((c) => c[0])).toEqual(['waiting: postgres down (retrying)', 'waiting: not migrated (retrying)']);
  });

  it('jitter keeps each wait between half and all of the backoff', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const calls: number[] = [];
    let failures = 2;
    const ready = startWhenReady(
      [
        {
          run: async () => {
            calls.push(Date.now());
            if (failures-- > 0) throw new Error('down');
          },
        },
      ],
      new AbortController().signal,
      quietLog(),
      { reason: null },
    );
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await ready).toBe(true);
    expect([calls[1]! - calls[0]!, calls[2]! - calls[1]!]).toEqual([125, 250]);
  });

  it('returns false when aborted while waiting, without running later steps', async () => {
    const controller = new AbortController();
    const later = vi.fn(async () => {});
    const log = quietLog();
    const ready = startWhenReady(
      [
        {
          run: async () => {
            throw new Error('down');
          },
        },
        { run: later },
      ],
      controller.signal,
      log,
      { reason: null },
    );
    await vi.advanceTimersByTimeAsync(1_000);
    controller.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(await ready).toBe(false);
    expect(later).not.toHaveBeenCalled();
    expect(log.info).not.toHaveBeenCalled();
  });
});
