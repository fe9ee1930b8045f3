import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { connect } from '../db.js';
import type { Logger } from '../log.js';
import { migrate } from '../migrate.js';
import { startBridge, type RunningBridge } from '../runtime.js';
import { loadSocketConfig } from './config.js';
import { seedDemo } from './demo.js';
import { startSocketServer, type RunningSocketServer } from './server.js';

export interface RunningDemo {
  bridge: RunningBridge;
  server: RunningSocketServer;
  stop(): Promise<void>;
}

/**
 * `unread-sync demo`: migrate, seed the demo rooms, run a bridge and a socket server in demo mode.
 * Without SUPABASE_JWT_SECRET a random secret is used: demo tokens only need to verify locally.
 */
export async function startDemo(config: Config, log: Logger, env: Record<string, string | undefined> = process.env): Promise<RunningDemo> {
  await migrate({
    databaseUrl: config.databaseUrl,
    direction: 'up',
    lockTimeoutMs: config.migrateLockTimeoutMs,
    retries: config.migrateRetries,
    log: (m) => log.info(m),
  });
  const sql = connect(config.databaseUrl, { max: 1, applicationName: 'unread-sync demo seed' });
  try {
    await seedDemo(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
  const socketConfig = loadSocketConfig({
    ...env,
    REDIS_URL: config.redisUrl,
    UNREAD_KEY_PREFIX: config.keyPrefix,
    DATABASE_URL: config.databaseUrl,
    SUPABASE_JWT_SECRET: env.SUPABASE_JWT_SECRET || randomBytes(32).toString('hex'),
    UNREAD_DEMO: 'true',
  });
  const bridge = startBridge(config, log);
  const server = await startSocketServer(socketConfig, log);
  log.info({ url: server.url }, 'demo running: open the URL in a browser');
  return {
    bridge,
    server,
    async stop() {
      await server.close();
      await bridge.stop();
    },
  };
}
