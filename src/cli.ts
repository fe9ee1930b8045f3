#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig, ConfigError, type Config } from './config.js';
import { connect } from './db.js';
import { rebuildAll } from './rebuild.js';
import { parseUserId } from './ids.js';
import { createLogger } from './log.js';
import { installPostgresWriteGuard } from './process-guard.js';
import { migrate } from './migrate.js';
import { UnreadReader } from './reader.js';
import { startBridge } from './runtime.js';
import { createRedis, UnreadStore } from './store/store.js';
import { verify } from './verify.js';
import { loadSocketConfig, startDemo, startSocketServer } from './socket/index.js';

const userIdArg = (value: string) => {
  try {
    return parseUserId(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

const positiveInt = (value: string) => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive whole number');
  return n;
};

function withStore<T>(config: Config, fn: (store: UnreadStore) => Promise<T>): Promise<T> {
  const redis = createRedis(config.redisUrl, { clusterNodes: config.redisClusterNodes });
  const store = new UnreadStore(redis, config.keyPrefix);
  return fn(store).finally(() => redis.disconnect());
}

/** Runs until SIGINT/SIGTERM, then stops cleanly (the checkpoint is saved on the way out). */
async function runUntilSignal(stop: () => Promise<void>, done: Promise<void>): Promise<void> {
  const onSignal = () => void stop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await done;
}

const program = new Command()
  .name('unread-sync')
  .description('Chat unread badges mirrored from Postgres into Redis')
  .showHelpAfterError();

program
  .command('migrate')
  .description('apply (up) or roll back (down) the unread-sync migrations')
  .argument('<direction>', 'up or down', (v) => {
    if (v !== 'up' && v !== 'down') throw new InvalidArgumentError('must be "up" or "down"');
    return v;
  })
  .option('--count <n>', 'how many migrations (default: all)', positiveInt)
  .action(async (direction: 'up' | 'down', opts: { count?: number }) => {
    const config = loadConfig();
    const ran = await migrate({
      databaseUrl: config.databaseUrl,
      direction,
      ...(opts.count ? { count: opts.count } : {}),
      log: (m) => process.stderr.write(`${m}\n`),
    });
    console.log(ran.length === 0 ? 'nothing to migrate' : `${direction}: ${ran.join(', ')}`);
  });

program
  .command('bridge')
  .description('mirror committed unread changes from Postgres into Redis (runs until SIGTERM)')
  .action(async () => {
    const config = loadConfig();
    const log = createLogger(config.logLevel, 'unread-sync-bridge');
    installPostgresWriteGuard(log);
    if (config.autoMigrate) await migrate({ databaseUrl: config.databaseUrl, direction: 'up' });
    const running = startBridge(config, log);
    await runUntilSignal(running.stop, running.done);
  });

program
  .command('serve')
  .description('Socket.IO badge server: reads Redis only, needs no database credentials')
  .action(async () => {
    const socketConfig = loadSocketConfig();
    const log = createLogger(socketConfig.logLevel, 'unread-sync-socket');
    const server = await startSocketServer(socketConfig, log);
    await runUntilSignal(server.close, new Promise<void>((r) => server.http.once('close', () => r())));
  });

program
  .command('start')
  .description('local default: apply migrations, then run the bridge and the socket server in one process')
  .action(async () => {
    const config = loadConfig();
    const log = createLogger(config.logLevel, 'unread-sync');
    installPostgresWriteGuard(log);
    await migrate({ databaseUrl: config.databaseUrl, direction: 'up' });
    const env: Record<string, string | undefined> = { ...process.env, REDIS_URL: config.redisUrl, UNREAD_KEY_PREFIX: config.keyPrefix };
    if (!env.SUPABASE_JWT_SECRET && !env.SUPABASE_JWKS_URL) {
      // Local default only: nobody outside this process knows this secret, so set
      // SUPABASE_JWT_SECRET (or SUPABASE_JWKS_URL) to let real clients connect.
      env.SUPABASE_JWT_SECRET = randomBytes(32).toString('hex');
      log.warn('no SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL: sockets use an ephemeral secret (see `npm run demo`)');
    }
    const running = startBridge(config, log);
    let server: Awaited<ReturnType<typeof startSocketServer>>;
    try {
      server = await startSocketServer(loadSocketConfig(env), log);
    } catch (err) {
      await running.stop(); // no headless bridge left holding the lock
      throw err;
    }
    log.info({ url: server.url }, 'bridge and socket server running');
    const stop = async () => {
      await server.close();
      await running.stop();
    };
    await runUntilSignal(stop, running.done);
  });

program
  .command('demo')
  .description('seed demo rooms, run bridge + socket server with the demo page (demo endpoints on)')
  .action(async () => {
    const config = loadConfig();
    const log = createLogger(config.logLevel, 'unread-sync-demo');
    installPostgresWriteGuard(log);
    const demo = await startDemo(config, log);
    await runUntilSignal(demo.stop, demo.bridge.done);
  });

program
  .command('badge')
  .description("print a user's unread counts (from Redis; hydrated through the bridge on a miss)")
  .argument('<userId>', 'user id (UUID)', userIdArg)
  .option('--json', 'print JSON')
  .action(async (userId: string, opts: { json?: boolean }) => {
    const config = loadConfig();
    await withStore(config, async (store) => {
      const counts = await new UnreadReader(store, { hydrateTimeoutMs: config.hydrateTimeoutMs }).getCounts(userId);
      if (opts.json) {
        console.log(JSON.stringify(counts));
      } else {
        console.log(`user ${counts.userId}: ${counts.total} unread in ${counts.unreadRooms} room(s)`);
        for (const [room, n] of Object.entries(counts.rooms)) console.log(`  ${room}  ${n}`);
      }
    });
  });

program
  .command('verify')
  .description('compare every cached user with the database; exit 1 when any drifted')
  .option('--repair', 'forget drifted users and have the bridge hydrate them again')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { repair?: boolean; json?: boolean }) => {
    const config = loadConfig();
    const sql = connect(config.databaseUrl, { max: 2, applicationName: 'unread-sync verify' });
    try {
      const report = await withStore(config, (store) => {
        const reader = new UnreadReader(store, { hydrateTimeoutMs: config.hydrateTimeoutMs });
        return verify({
          sql,
          store,
          bridgeName: config.bridgeName,
          repair: opts.repair ?? false,
          reload: (id) => reader.getTotal(id),
        });
      });
      if (opts.json) console.log(JSON.stringify(report));
      else {
        for (const d of report.drifted) {
          console.log(`drift ${d.userId}: redis total ${d.redis.total}, database total ${d.database.total}`);
        }
        if (opts.repair && report.drifted.length > 0) {
          console.log(
            `repaired ${report.repaired} of ${report.drifted.length} drifted users: forgot them and had the bridge reload them from the database, then compared again`,
          );
        }
        console.log(
          `checked ${report.checked} cached users, ${report.drifted.length} drifted, ${report.repaired} repaired` +
            (report.newer > 0 ? ` (${report.newer} rooms changed after the snapshot, not compared)` : ''),
        );
      }
      // Drift is a failure unless --repair repaired every drifted user.
      if (report.drifted.length > report.repaired || (report.drifted.length > 0 && !opts.repair)) process.exitCode = 1;
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

program
  .command('rebuild')
  .description('reload users from the database through the running bridge (all users with unread, or one)')
  .option('--user <userId>', 'only this user', userIdArg)
  .action(async (opts: { user?: string }) => {
    const config = loadConfig();
    await withStore(config, async (store) => {
      const reader = new UnreadReader(store, { hydrateTimeoutMs: config.hydrateTimeoutMs });
      if (opts.user) {
        await store.forget([opts.user]);
        const c = await reader.getCounts(opts.user);
        console.log(`rebuilt ${c.userId}: ${c.total} unread in ${c.unreadRooms} room(s)`);
        return;
      }
      const sql = connect(config.databaseUrl, { max: 1, applicationName: 'unread-sync rebuild' });
      try {
        const r = await rebuildAll({ sql, store, reader, pageSize: config.hydrateBatchSize * 5 });
        console.log(
          `forgot ${r.forgottenKeys} keys; hydrated ${r.users} users with unread in ${r.seconds.toFixed(1)} s` +
            ` (${Math.round(r.users / Math.max(r.seconds, 0.001))} users/s; others load on demand)`,
        );
      } finally {
        await sql.end({ timeout: 5 });
      }
    });
  });

program.parseAsync().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`unread-sync: ${err.message}`);
    process.exitCode = 2;
    return;
  }
  console.error(`unread-sync: ${(err as Error).message}`);
  process.exitCode = 1;
});
