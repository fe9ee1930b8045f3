import type { Logger } from './log.js';
import { sleep } from './sleep.js';

/**
 * Equal-jitter exponential backoff: the cap doubles per attempt from `baseMs` up to `maxMs`; the
 * delay is half the cap fixed, half random, so reconnects of a fleet spread out.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/** One start-up step: resolves when its dependency is there, throws (with the reason) when not yet. */
export interface StartupStep {
  run: () => Promise<void>;
}

/**
 * Runs start-up steps in order, each retried with jittered backoff (250 ms doubling to 5 s) until
 * it passes: a dependency that is down at start-up delays the start, never hangs or ends it.
 * `reason` says what is awaited (for /readyz); each new reason is logged once. False if aborted.
 */
export async function startWhenReady(
  steps: StartupStep[],
  signal: AbortSignal,
  log: Pick<Logger, 'info' | 'warn'>,
  status: { reason: string | null },
): Promise<boolean> {
  let attempt = 0;
  let logged: string | null = null;
  for (const step of steps) {
    for (;;) {
      if (signal.aborted) return false;
      try {
        await step.run();
        break;
      } catch (err) {
        if (signal.aborted) return false;
        status.reason = (err as Error).message;
        if (status.reason !== logged) {
          log.warn(`waiting: ${status.reason} (retrying)`);
          logged = status.reason;
        }
        await sleep(backoffDelay(attempt++, 250, 5_000), signal);
      }
    }
  }
  status.reason = null;
  if (logged) log.info('dependencies are up: starting');
  return !signal.aborted;
}
