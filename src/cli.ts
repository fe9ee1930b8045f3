#!/usr/bin/env node
// The command line: parses arguments, prints, and calls the launchers (src/launch.ts) and the
// one-shot commands (src/commands). Nothing here wires processes.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig, logLevels, settings, ConfigError, type Config } from './config.js';
import { connect, queries, type Sql } from './db.js';
import { postgresEndpoint, redactSecrets, redisEndpoint } from './env.js';
import { ErrorCode, UnreadSyncError } from './errors.js';
import { assertLiveBridge, rebuildAll } from './commands/rebuild.js';
import { parseUserId } from './ids.js';
import { createLogger, type Logger } from './log.js';
import { installPostgresWriteGuard } from './process-guard.js';
import { migrate, MigrationLockError } from './migrate.js';
import { UnreadReader } from './read/reader.js';
import { postgresProblem, redisProblem } from './problems.js';
import { startBridge, startDemo, startLocal, startServe, type RunningProcess } from './launch.js';
import { loadSocketConfig } from './socket/config.js';
import { createRedis, UnreadStore } from './store/store.js';
import { verify } from './commands/verify.js';

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

/** A failure the user can act on: printed as one line, no stack trace. */
class CliError extends UnreadSyncError {}

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Redis for a one-shot command: checked once up front, so "unreachable" is one line, not ioredis traces. */
async function withStore<T>(config: Config, fn: (store: UnreadStore) => Promise<T>): Promise<T> {
  const redis = createRedis(config.redisUrl, { clusterNodes: config.redisClusterNodes });
  redis.on('error', () => {}); // reported below as one line
  try {
    try {
      await Promise.race([redis.ping(), new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), 3_000).unref())]);
    } catch (err) {
      throw new CliError(ErrorCode.REDIS_UNAVAILABLE, redisProblem(err, config.redisUrl, config.redisClusterNodes));
    }
    return await fn(new UnreadStore(redis, config.keyPrefix));
  } finally {
    redis.disconnect();
  }
}

/** Postgres for a one-shot command, checked once up front (unreachable, not migrated: one line). */
async function withDatabase<T>(config: Config, name: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = connect(config.databaseUrl, { max: 2, applicationName: `unread-sync ${name}` });
  try {
    try {
      await queries.checkSchema(sql);
    } catch (err) {
      throw new CliError(ErrorCode.POSTGRES_UNAVAILABLE, postgresProblem(err, config.databaseUrl));
    }
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Progress on a terminal only (stderr, rewritten in place); nothing in pipes and logs. */
function progress(label: string): { update: (n: number) => void; done: () => void } {
  if (!process.stderr.isTTY) return { update: () => {}, done: () => {} };
  const started = Date.now();
  let last = 0;
  return {
    update: (n) => {
      if (Date.now() - last < 100) return;
      last = Date.now();
      const s = (Date.now() - started) / 1000;
      process.stderr.write(`\r${label}: ${n} users (${Math.round(n / Math.max(s, 0.001))}/s, ${s.toFixed(1)} s)\x1b[K`);
    },
    done: () => process.stderr.write('\r\x1b[K'),
  };
}

/** Runs until SIGINT/SIGTERM, then stops cleanly (the checkpoint is saved on the way out). */
/** How long a stop may take after SIGINT/SIGTERM before the process exits anyway (status 1). */
const STOP_DEADLINE_MS = 20_000;
/** How long a stopped process may stay alive for handles it left open before it exits (status kept). */
const EXIT_GRACE_MS = 2_000;

/**
 * Runs until SIGINT/SIGTERM, then stops cleanly (the checkpoint is saved on the way out). A stop
 * that hangs, or a handle left open after it, must not keep an orchestrator waiting: both are
 * bounded (unref'd timers, so a clean exit is never delayed) and logged.
 */
async function runUntilSignal(running: RunningProcess, log: Logger): Promise<void> {
  const onSignal = () => {
    setTimeout(() => {
      log.error(`did not stop within ${STOP_DEADLINE_MS} ms of the signal: exiting`);
      process.exit(1);
    }, STOP_DEADLINE_MS).unref();
    void running.stop();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await running.done;
  setTimeout(() => {
    log.warn(`stopped, but open handles kept the process alive for ${EXIT_GRACE_MS} ms: exiting`);
    process.exit();
  }, EXIT_GRACE_MS).unref();
}

/**
 * A command that runs until stopped with the main config: its logger, the guard against writes
 * to Postgres from this process, then the launcher, until SIGINT/SIGTERM.
 */
function runProcess(
  logName: string,
  launch: (config: Config, log: Logger) => RunningProcess | Promise<RunningProcess>,
): () => Promise<void> {
  return async () => {
    const config = loadConfig();
    const log = createLogger(config.logLevel, logName);
    installPostgresWriteGuard(log);
    await runUntilSignal(await launch(config, log), log);
  };
}

/** A setting's default, read from the config table so the help text cannot drift from it. */
const defaultOf = (key: keyof typeof settings): string => String(settings[key].schema.parse(undefined));

const program = new Command()
  .name('unread-sync')
  .description('Chat unread badges mirrored from Postgres into Redis')
  .version(VERSION)
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Configuration is read from the environment:
  DATABASE_URL   Postgres, default ${defaultOf('databaseUrl')}
  REDIS_URL      Redis, default ${defaultOf('redisUrl')} (redis://:password@host:port/db;
                 REDIS_HOST/REDIS_PORT/REDIS_PASSWORD are refused, put them in REDIS_URL)
  UNREAD_AUTO_MIGRATE=true   let \`bridge\` apply pending migrations itself
  LOG_LEVEL      ${logLevels.join('|')} (default ${defaultOf('logLevel')})
Every variable: README.md, "Configuration". Quick start: \`unread-sync start\`, or \`unread-sync demo\`.`,
  );

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
    let ran: string[];
    try {
      ran = await migrate({
        databaseUrl: config.databaseUrl,
        direction,
        ...(opts.count ? { count: opts.count } : {}),
        lockTimeoutMs: config.migrateLockTimeoutMs,
        retries: config.migrateRetries,
        log: (m) => process.stderr.write(`${m}\n`),
      });
    } catch (err) {
      if (err instanceof MigrationLockError) throw new CliError(ErrorCode.MIGRATION_LOCKED, err.message);
      throw new CliError(ErrorCode.MIGRATION_FAILED, `migrate ${direction} failed: ${postgresProblem(err, config.databaseUrl)}`);
    }
    console.log(ran.length === 0 ? 'nothing to migrate' : `${direction}: ${ran.join(', ')}`);
  });

program
  .command('bridge')
  .description('mirror committed unread changes from Postgres into Redis (runs until SIGTERM)')
  .action(
    runProcess('unread-sync-bridge', (config, log) => {
      // Dependencies that are down (or a missing schema) are waited for inside, with /readyz saying why.
      const running = startBridge(config, log);
      if (config.metricsPort > 0) log.info(`bridge starting; readiness at http://${config.metricsHost}:${config.metricsPort}/readyz`);
      return running;
    }),
  );

program
  .command('serve')
  .description('Socket.IO badge server: reads Redis only, needs no database credentials')
  .action(async () => {
    const socketConfig = loadSocketConfig();
    const log = createLogger(socketConfig.logLevel, 'unread-sync-socket');
    await runUntilSignal(await startServe(socketConfig, log), log);
  });

program
  .command('start')
  .description('local default: apply migrations, then run the bridge and the socket server in one process')
  .action(
    runProcess('unread-sync', async (config, log) => {
      const running = await startLocal(config, log);
      printStartBanner(config, running.server.url);
      return running;
    }),
  );

/** What runs where, and what to try next (stdout, for the person who typed `npm start`). */
function printStartBanner(config: Config, url: string): void {
  const user = randomUUID();
  const db = process.env.DATABASE_URL ? '"$DATABASE_URL"' : config.databaseUrl;
  const lines = [
    '',
    'unread-sync is running (Ctrl-C stops it)',
    `  socket server   ${url}   (Socket.IO badges; ${url}/ lists its endpoints)`,
    `  readiness       ${url}/readyz   (503 with the reason while Postgres or Redis is not there yet)`,
    config.metricsPort > 0 ? `  bridge metrics  http://${config.metricsHost}:${config.metricsPort}/metrics` : null,
    `  Postgres        ${postgresEndpoint(config.databaseUrl)}   Redis ${redisEndpoint(config.redisUrl, config.redisClusterNodes)}   keys ${config.keyPrefix}*`,
    '',
    'Next steps:',
    `  change a badge:  psql ${db} -c "insert into chat_rooms (id, user_id, company_id, user_unread_count) values (gen_random_uuid(), '${user}', gen_random_uuid(), 3)"`,
    `  read it:         npx unread-sync badge ${user}`,
    '  demo page:       stop this, run `npm run demo` and open http://127.0.0.1:3000/demo',
    '',
  ];
  process.stdout.write(`${lines.filter((l) => l !== null).join('\n')}\n`);
}

program
  .command('demo')
  .description('seed demo rooms, run bridge + socket server with the demo page (demo endpoints on)')
  .action(runProcess('unread-sync-demo', startDemo));

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
    await withDatabase(config, 'verify', async (sql) => {
      const shown = progress('verify');
      const report = await withStore(config, (store) => {
        const reader = new UnreadReader(store, { hydrateTimeoutMs: config.hydrateTimeoutMs });
        return verify({
          sql,
          store,
          bridgeName: config.bridgeName,
          repair: opts.repair ?? false,
          reload: (id) => reader.getTotal(id),
          onProgress: shown.update,
        });
      }).finally(shown.done);
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
    });
  });

program
  .command('rebuild')
  .description('reload users from the database through the running bridge (all users with unread, or one)')
  .option('--user <userId>', 'only this user', userIdArg)
  .action(async (opts: { user?: string }) => {
    const config = loadConfig();
    const bridgeWaitMs = Math.max(5_000, 2 * config.checkpointIntervalMs + 2_000);
    await withDatabase(config, 'rebuild', (sql) =>
      withStore(config, async (store) => {
        const reader = new UnreadReader(store, { hydrateTimeoutMs: config.hydrateTimeoutMs });
        if (opts.user) {
          await assertLiveBridge(sql, config.bridgeName, bridgeWaitMs); // before forgetting anything
          await store.forget([opts.user]);
          const c = await reader.getCounts(opts.user);
          console.log(`rebuilt ${c.userId}: ${c.total} unread in ${c.unreadRooms} room(s)`);
          return;
        }
        const shown = progress('rebuild');
        const r = await rebuildAll({
          sql,
          store,
          reader,
          pageSize: config.hydrateBatchSize * 5,
          bridgeName: config.bridgeName,
          bridgeWaitMs,
          onProgress: shown.update,
        }).finally(shown.done);
        console.log(
          `forgot ${r.forgottenKeys} keys; hydrated ${r.users} users with unread in ${r.seconds.toFixed(1)} s` +
            ` (${Math.round(r.users / Math.max(r.seconds, 0.001))} users/s; others load on demand)`,
        );
      }),
    );
  });

program.parseAsync().catch((err: unknown) => {
  // One line, never a stack trace, never a credential.
  if (err instanceof ConfigError) {
    console.error(redactSecrets(`unread-sync: ${err.message}`));
    process.exitCode = 2;
    return;
  }
  const e = err as Error & { code?: string; address?: string; port?: number };
  const message =
    e.name === 'PostgresError'
      ? postgresProblem(err, process.env.DATABASE_URL ?? '')
      : e.code === 'EADDRINUSE'
        ? `${e.address ?? ''}:${e.port ?? ''} is already in use (another unread-sync? set PORT or UNREAD_METRICS_PORT)`
        : (e.message ?? String(err));
  console.error(redactSecrets(`unread-sync: ${message}`));
  process.exitCode = 1;
});
