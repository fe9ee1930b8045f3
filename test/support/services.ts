import { execFileSync } from 'node:child_process';
import postgres from 'postgres';
import { Redis } from 'ioredis';

export interface Services {
  databaseUrl: string;
  redisUrl: string;
  stop: () => Promise<void>;
}

const HOW_TO_START = `
  Start the local services, or point the tests at yours:
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres TEST_REDIS_URL=redis://127.0.0.1:6379
  (with a Docker engine and no URLs set, testcontainers starts both instead)`;

async function pgReachable(url: string): Promise<string | null> {
  const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    await sql`select 1`;
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/**
 * The default source (UNREAD_SOURCE=auto) streams when the server runs wal_level=logical, and the
 * logical source's tests need it: say so up front with the fix, rather than fail those tests late.
 */
async function requireLogical(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    const [row] = await sql<{ wal_level: string }[]>`show wal_level`;
    if (row?.wal_level === 'logical') return;
    throw new Error(
      `unread-sync tests need Postgres with wal_level=logical (this server runs ${row?.wal_level ?? 'unknown'}). As a superuser:\n` +
        `    psql -c "alter system set wal_level = logical" -c "alter system set max_replication_slots = 64" \\\n` +
        `         -c "alter system set max_wal_senders = 64" -c "alter system set max_connections = 300"\n` +
        `    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart\n` +
        `  (.ci/run does this by itself when needed.)`,
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function redisReachable(url: string): Promise<string | null> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 3000 });
  redis.on('error', () => {});
  try {
    await redis.connect();
    await redis.ping();
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    redis.disconnect();
  }
}

function dockerAvailable(): boolean {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Test services, in this order: TEST_DATABASE_URL / TEST_REDIS_URL (or DATABASE_URL / REDIS_URL),
 * then the local defaults, then testcontainers when a Docker engine runs. Otherwise the run
 * fails with the commands that start the services: a suite is never skipped silently.
 */
export async function resolveServices(): Promise<Services> {
  const envDb = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  const envRedis = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL;
  const databaseUrl = envDb ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const redisUrl = envRedis ?? 'redis://127.0.0.1:6379';
  const [pgError, redisError] = await Promise.all([pgReachable(databaseUrl), redisReachable(redisUrl)]);
  if (!pgError && !redisError) {
    await requireLogical(databaseUrl);
    return { databaseUrl, redisUrl, stop: async () => {} };
  }

  if (!envDb && !envRedis && dockerAvailable()) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const { RedisContainer } = await import('@testcontainers/redis');
    const [pg, redis] = await Promise.all([
      // wal_level=logical: the default source streams commits (test/logical.test.ts).
      new PostgreSqlContainer('postgres:15')
        .withUsername('postgres')
        .withPassword('postgres')
        .withCommand([
          'postgres',
          '-c',
          'wal_level=logical',
          '-c',
          'max_replication_slots=64',
          '-c',
          'max_wal_senders=64',
          '-c',
          'max_connections=300',
        ])
        .start(),
      new RedisContainer('redis:7').start(),
    ]);
    return {
      databaseUrl: pg.getConnectionUri(),
      redisUrl: redis.getConnectionUrl(),
      stop: async () => {
        await Promise.all([pg.stop(), redis.stop()]);
      },
    };
  }
  const problems = [
    pgError ? `Postgres at ${databaseUrl.replace(/\/\/[^@]*@/, '//***@')}: ${pgError}` : null,
    redisError ? `Redis at ${redisUrl}: ${redisError}` : null,
  ].filter(Boolean);
  throw new Error(`unread-sync tests need real Postgres and Redis.\n  ${problems.join('\n  ')}\n${HOW_TO_START}`);
}
