/**
 * Equal-jitter exponential backoff: the cap doubles per attempt from `baseMs` up to `maxMs`; the
 * delay is half the cap fixed, half random, so reconnects of a fleet spread out.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(cap / 2 + random() * (cap / 2));
}
