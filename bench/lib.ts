import { performance } from 'node:perf_hooks';

export const now = (): number => performance.now();
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Latency samples in ms; grows in place so millions of samples stay cheap. */
export class Samples {
  private buf = new Float64Array(1 << 14);
  private n = 0;
  add(ms: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = ms;
  }
  get count(): number {
    return this.n;
  }
  sorted(): Float64Array {
    return this.buf.slice(0, this.n).sort();
  }
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
  /** Percentile -> ms, for the chart (a thinned CDF). */
  cdf: Array<[number, number]>;
}

export function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

const CDF_POINTS = [0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 99, 99.5, 99.9, 100];

export function summarize(s: Samples): LatencySummary {
  const sorted = s.sorted();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    p50: pct(sorted, 50),
    p95: pct(sorted, 95),
    p99: pct(sorted, 99),
    max: sorted.length ? (sorted[sorted.length - 1] as number) : NaN,
    mean: sorted.length ? sum / sorted.length : NaN,
    cdf: sorted.length ? CDF_POINTS.map((p) => [p, p === 0 ? (sorted[0] as number) : pct(sorted, p)]) : [],
  };
}

/**
 * Closed loop: `concurrency` workers call `op` back to back for `durationMs`.
 * Returns latencies and ops/s (measured over the wall time the loop really ran).
 */
export async function closedLoop(
  concurrency: number,
  durationMs: number,
  op: (worker: number, i: number) => Promise<unknown>,
): Promise<{ latency: LatencySummary; opsPerSec: number; ops: number; errors: number }> {
  const samples = new Samples();
  let errors = 0;
  const start = now();
  const end = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      let i = 0;
      while (now() < end) {
        const t = now();
        try {
          await op(w, i++);
          samples.add(now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = now() - start;
  return { latency: summarize(samples), opsPerSec: (samples.count / elapsed) * 1000, ops: samples.count, errors };
}

export const fmt = (v: number | null | undefined, digits = 2): string =>
  v === null || v === undefined || Number.isNaN(v) ? 'n/a' : v >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits);

/** Deterministic PRNG (mulberry32), so runs pick the same users and rooms. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}
