import type { Logger } from './log.js';

/**
 * postgres.js 3.4.9 can throw from a setImmediate after a connection closed with a small write
 * still buffered (TypeError "Cannot read properties of null (reading 'write')" in nextWrite;
 * upstream porsager/postgres#1154 and #1208, fix not released). Nothing can catch it, and it
 * would take the whole bridge down whenever Postgres restarts or terminates a backend.
 * This guard recognises exactly that error and keeps the process alive: the affected query has
 * been rejected already or is abandoned by the bridge's cycle watchdog, and the source reconnects.
 * Any other uncaught error still ends the process, as Node would.
 */
export function installPostgresWriteGuard(log: Logger): void {
  process.on('uncaughtException', (err) => {
    // A TypeError from the runtime has no code: its text and where it was thrown are all there is.
    const known =
      err instanceof TypeError && err.message.includes("reading 'write'") && /postgres[\\/]src[\\/]connection\.js/.test(err.stack ?? '');
    if (known) {
      log.warn({ err: err.message }, 'postgres.js wrote to a closed socket (known driver bug); recovering');
      return;
    }
    log.fatal({ err: err.message, stack: err.stack }, 'uncaught exception');
    process.exit(1);
  });
}
