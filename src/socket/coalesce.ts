/** A value with a per-user monotonic seq (a badge total). */
export interface Sequenced {
  seq: number;
}

/**
 * Leading + trailing throttle of one user's emits: a value goes out at once when the last emit is
 * at least `gapMs` old; values offered sooner are folded into the newest one, sent when the gap
 * has passed. Anything not newer than what is known (sent or pending) is dropped, so emits only
 * ever go forward in seq.
 */
export class Coalescer<T extends Sequenced> {
  /** What was emitted last. */
  last: T | null = null;
  /** What waits for the gap to pass (or for flush()). */
  pending: T | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastEmitAt = 0;

  constructor(
    private readonly gapMs: number,
    private readonly emit: (value: T) => void,
  ) {}

  /** The highest seq emitted or pending (-1: none yet). */
  knownSeq(): number {
    return Math.max(this.last?.seq ?? -1, this.pending?.seq ?? -1);
  }

  offer(value: T): void {
    if (value.seq <= this.knownSeq()) return;
    this.pending = value;
    if (this.timer) return;
    const wait = this.lastEmitAt + this.gapMs - Date.now();
    if (wait <= 0) this.flush();
    else this.timer = setTimeout(() => this.flush(), wait);
  }

  /** Makes `value` the pending one when it is newer, without scheduling anything (see flush). */
  hold(value: T): void {
    if (value.seq > this.knownSeq()) this.pending = value;
  }

  /** Emits the pending value now, if any; a scheduled emit is cancelled. */
  flush(): void {
    this.cancel();
    const value = this.pending;
    if (!value) return;
    this.pending = null;
    this.last = value;
    this.lastEmitAt = Date.now();
    this.emit(value);
  }

  /** Drops the scheduled emit (the pending value stays for a later flush). */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
