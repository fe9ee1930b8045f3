import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';

/** The migrations shipped with this package, and the table that records which ran. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../migrations', import.meta.url));
export const MIGRATIONS_TABLE = 'unread_sync_migrations';

export interface MigrateOptions {
  databaseUrl: string;
  direction: 'up' | 'down';
  /** How many to run; default: all pending (up) or all applied (down). */
  count?: number;
  log?: (message: string) => void;
}

/** Applies or rolls back unread-sync's migrations; returns the names that ran. */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  const ran = await runner({
    databaseUrl: options.databaseUrl,
    dir: MIGRATIONS_DIR,
    migrationsTable: MIGRATIONS_TABLE,
    direction: options.direction,
    count: options.count ?? Infinity,
    checkOrder: true,
    advisoryLockMode: 'wait',
    verbose: false,
    log: options.log ?? (() => {}),
  });
  return ran.map((m) => m.name);
}
