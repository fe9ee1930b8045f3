import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, uuid, type TestDb } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { ensureBuilt, eventually, freePort, runCli, spawnCli, type CliRun } from './support/built-cli.js';

// Ports nobody listens on: a Redis and a Postgres that are down.
const DOWN_REDIS = 6481;
const DOWN_PG = 5481;
const SECRET = 'Zq81xT-pw-s3cr3t';

const all = (r: CliRun) => r.stdout + r.stderr;

/** Exactly one line on stderr, no stack trace, no credential. */
function oneCleanLine(r: CliRun) {
  expect(all(r)).not.toContain(SECRET);
  expect(all(r)).not.toMatch(/^\s+at /m);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
}

describe('CLI: secrets and one-line errors (built CLI)', () => {
  const { db, r } = useEnv();
  let bare: TestDb;
  beforeAll(async () => {
    ensureBuilt();
    bare = await createTestDb({ migrate: false });
  });
  afterAll(async () => {
    await bare?.drop();
  });

  it('a bad DATABASE_URL scheme names the variable but never prints its password', async () => {
    const res = await runCli(['badge', uuid()], { DATABASE_URL: `mysql://app:${SECRET}@db.internal:3306/chat` });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('DATABASE_URL must be a URL starting with postgres://');
    expect(res.stderr).toContain('app:[redacted]@db.internal');
    expect(all(res)).not.toContain(SECRET);
  });

  it('connection errors of every one-shot command never print the password', async () => {
    const down = { DATABASE_URL: `postgres://app:${SECRET}@127.0.0.1:${DOWN_PG}/chat`, REDIS_URL: r.url };
    for (const args of [['migrate', 'up'], ['verify'], ['rebuild'], ['migrate', 'down', '--count', '1']]) {
      const res = await runCli(args, down);
      expect(res.code, args.join(' ')).toBe(1);
      expect(res.stderr).toContain(`Postgres at 127.0.0.1:${DOWN_PG} is unreachable`);
      oneCleanLine(res);
    }
    // A reachable server that rejects the connection: its message, still without the password.
    const missing = await runCli(['verify'], { ...down, DATABASE_URL: `postgres://postgres:${SECRET}@127.0.0.1:5432/no_such_db_i12` });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no_such_db_i12');
    oneCleanLine(missing);
    const redis = await runCli(['badge', uuid()], { REDIS_URL: `redis://:${SECRET}@127.0.0.1:${DOWN_REDIS}/0` });
    expect(redis.code).toBe(1);
    oneCleanLine(redis);
  });

  it('secret settings are never echoed by config errors', async () => {
    const res = await runCli(['bridge'], {
      UNREAD_SOURCE: 'supabase',
      SUPABASE_URL: `https://svc:${SECRET}@example.supabase.co`,
      SUPABASE_SERVICE_ROLE_KEY: SECRET.slice(0, 10),
      REDIS_PASSWORD: SECRET,
      REDIS_HOST: '10.0.0.9',
    });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('SUPABASE_SERVICE_ROLE_KEY');
    expect(all(res)).not.toContain(SECRET);
    expect(all(res)).not.toContain(SECRET.slice(0, 10));
  });

  it('a long-running bridge never logs the password while Postgres is down, and SIGTERM exits 0', async () => {
    const port = await freePort();
    const child = spawnCli(['bridge'], {
      DATABASE_URL: `postgres://app:${SECRET}@127.0.0.1:${DOWN_PG}/chat`,
      REDIS_URL: r.url,
      UNREAD_KEY_PREFIX: r.prefix,
      UNREAD_METRICS_PORT: String(port),
      LOG_LEVEL: 'debug',
    });
    const body = await eventually(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/readyz`);
        const text = await res.text();
        return res.status === 503 && text.includes('Postgres at') ? text : undefined;
      },
      20_000,
      '/readyz did not report Postgres down',
    );
    expect(body).toContain(`Postgres at 127.0.0.1:${DOWN_PG} is unreachable`);
    child.kill('SIGTERM');
    const code = await new Promise((res) => child.once('exit', res));
    expect(code).toBe(0);
    expect(child.stdoutText() + child.stderrText()).not.toContain(SECRET);
    expect(child.stderrText()).not.toContain('uncaught');
  });

  it('Redis unreachable from badge and verify: one line naming host and port, exit 1', async () => {
    const env = { DATABASE_URL: db.url, REDIS_URL: `redis://127.0.0.1:${DOWN_REDIS}` };
    for (const args of [['badge', uuid()], ['verify']]) {
      const res = await runCli(args, env);
      expect(res.code, args.join(' ')).toBe(1);
      expect(res.stderr.trim()).toBe(`unread-sync: Redis at 127.0.0.1:${DOWN_REDIS} is unreachable (check REDIS_URL, and that Redis runs)`);
      oneCleanLine(res);
    }
  });

  it('one-shot commands on an unmigrated database say to migrate, exit 1', async () => {
    for (const args of [['verify'], ['rebuild']]) {
      const res = await runCli(args, { DATABASE_URL: bare.url, REDIS_URL: r.url, UNREAD_KEY_PREFIX: r.prefix });
      expect(res.code, args.join(' ')).toBe(1);
      expect(res.stderr.trim()).toBe(
        'unread-sync: the database is not migrated: run `unread-sync migrate up` (or set UNREAD_AUTO_MIGRATE=true)',
      );
    }
  });

  it('a bridge on an unmigrated database says so in /readyz and its log once, and starts after `migrate up`', async () => {
    const target = await createTestDb({ migrate: false });
    const port = await freePort();
    const env = {
      DATABASE_URL: target.url,
      REDIS_URL: r.url,
      UNREAD_KEY_PREFIX: r.prefix,
      UNREAD_METRICS_PORT: String(port),
      LOG_LEVEL: 'info',
    };
    const child = spawnCli(['bridge'], env);
    try {
      const body = await eventually(
        async () => {
          const res = await fetch(`http://127.0.0.1:${port}/readyz`);
          const text = await res.text();
          return res.status === 503 && text.includes('migrate') ? text : undefined;
        },
        20_000,
        '/readyz did not report the missing schema',
      );
      expect(JSON.parse(body).checks.startup).toBe(
        'the database is not migrated: run `unread-sync migrate up` (or set UNREAD_AUTO_MIGRATE=true)',
      );
      await new Promise((res) => setTimeout(res, 3_000)); // several retries
      expect(child.stderrText().split('not migrated').length - 1).toBe(1);
      const migrated = await runCli(['migrate', 'up'], { DATABASE_URL: target.url });
      expect(migrated.code).toBe(0);
      expect(migrated.stderr).toContain('migration up: 1764000000000_unread-sync-core');
      await eventually(
        async () => ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200 ? true : undefined),
        20_000,
        'bridge did not become ready',
      );
    } finally {
      child.kill('SIGTERM');
      expect(await new Promise((res) => child.once('exit', res))).toBe(0);
      await target.drop();
    }
  });

  it('rebuild with no bridge running fails before changing anything', async () => {
    const user = uuid();
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${uuid()}, ${user}, ${uuid()}, 4)`;
    await r.store.hydrate(new Map([[user, [{ roomId: uuid(), unread: 4 }]]]));
    const before = (await r.redis.keys(`${r.prefix}*`)).sort();
    expect(before.length).toBeGreaterThan(0);
    const res = await runCli(['rebuild'], { DATABASE_URL: db.url, REDIS_URL: r.url, UNREAD_KEY_PREFIX: r.prefix });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('no live bridge "default"');
    expect(res.stderr).toContain('nothing was changed');
    expect((await r.redis.keys(`${r.prefix}*`)).sort()).toEqual(before);
    expect((await r.store.read(user))?.total).toBe(4);
    const one = await runCli(['rebuild', '--user', user], { DATABASE_URL: db.url, REDIS_URL: r.url, UNREAD_KEY_PREFIX: r.prefix });
    expect(one.code).toBe(1);
    expect((await r.store.read(user))?.total).toBe(4);
  });

  it('--version, and --help names DATABASE_URL and REDIS_URL', async () => {
    const { version } = JSON.parse(await import('node:fs').then((fs) => fs.readFileSync('package.json', 'utf8'))) as { version: string };
    const v = await runCli(['--version'], {});
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(version);
    const h = await runCli(['--help'], {});
    expect(h.code).toBe(0);
    for (const word of ['DATABASE_URL', 'REDIS_URL', 'serve', 'demo', 'start', 'bridge']) expect(h.stdout).toContain(word);
  });

  it('REDIS_HOST / REDIS_PORT / REDIS_PASSWORD are refused with a message naming REDIS_URL', async () => {
    for (const cmd of [['badge', uuid()], ['serve']]) {
      const res = await runCli(cmd, { REDIS_HOST: '10.1.2.3', REDIS_PORT: '6380' });
      expect(res.code, cmd[0]).toBe(2);
      expect(res.stderr).toContain('REDIS_HOST, REDIS_PORT are not read');
      expect(res.stderr).toContain('REDIS_URL');
    }
  });
});
