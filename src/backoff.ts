import type { Logger } from './log.js';
import { sleep } from './sleep.js';

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
  let backoff = 0;
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
        backoff = Math.min(5_000, backoff === 0 ? 250 : backoff * 2);
        await sleep(backoff / 2 + Math.random() * (backoff / 2), signal);
      }
    }
  }
  status.reason = null;
  if (logged) log.info('dependencies are up: starting');
  return !signal.aborted;
}
