/**
 * Waits `ms`, or less when `signal` aborts; the abort listener is removed either way, because
 * the signals passed here (a bridge's run signal) live for the whole process.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
