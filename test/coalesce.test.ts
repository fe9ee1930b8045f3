// Service-free: the socket layer's per-user emit coalescer, on fake timers.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { vi } from 'vitest';
import { Coalescer } from '../src/socket/coalesce.js';

const t = (seq: number) => ({ seq, total: seq * 10 });

describe('Coalescer', () => {
  let sent: number[];
  let c: Coalescer<{ seq: number; total: number }>;
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_000_000);
    sent = [];
    c = new Coalescer(50, (v) => sent.push(v.seq));
  });
  afterEach(() => {
    c.cancel();
    vi.useRealTimers();
  });

  it('emits the first value at once (leading edge)', () => {
    c.offer(t(1));
    expect(sent).toEqual([1]);
    expect(c.last?.seq).toBe(1);
    expect(c.pending).toBeNull();
  });

  it('folds a burst within the gap into its newest value, sent when the gap has passed (trailing edge)', () => {
    c.offer(t(1));
    c.offer(t(2));
    c.offer(t(3));
    c.offer(t(4));
    expect(sent).toEqual([1]);
    vi.advanceTimersByTime(49);
    expect(sent).toEqual([1]);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([1, 4]);
    // The gap counts from the last emit.
    vi.advanceTimersByTime(20);
    c.offer(t(5));
    expect(sent).toEqual([1, 4]);
    vi.advanceTimersByTime(30);
    expect(sent).toEqual([1, 4, 5]);
  });

  it('emits at once again once the gap has passed', () => {
    c.offer(t(1));
    vi.advanceTimersByTime(50);
    c.offer(t(2));
    expect(sent).toEqual([1, 2]);
  });

  it('drops anything not newer than what was sent or is pending', () => {
    c.offer(t(5));
    c.offer(t(5));
    c.offer(t(3));
    expect(sent).toEqual([5]);
    c.offer(t(7));
    c.offer(t(6));
    expect(c.pending?.seq).toBe(7);
    expect(c.knownSeq()).toBe(7);
    vi.advanceTimersByTime(100);
    expect(sent).toEqual([5, 7]);
  });

  it('hold + flush sends the newest at once and cancels the scheduled emit', () => {
    c.offer(t(1));
    c.offer(t(2)); // scheduled
    c.hold(t(3));
    c.hold(t(1)); // older: ignored
    c.flush();
    expect(sent).toEqual([1, 3]);
    vi.advanceTimersByTime(200);
    expect(sent).toEqual([1, 3]);
    c.flush(); // nothing pending: nothing sent
    expect(sent).toEqual([1, 3]);
  });

  it('cancel drops the scheduled emit', () => {
    c.offer(t(1));
    c.offer(t(2));
    c.cancel();
    vi.advanceTimersByTime(200);
    expect(sent).toEqual([1]);
  });
});
