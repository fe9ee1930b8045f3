import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { UnreadStore } from '../src/store/store.js';
import { createTestRedis, uuid } from './support/env.js';
import { useDb } from './support/fixture.js';
import { privatePostgres, type PrivatePostgres } from './support/pg-server.js';
import { ensureBuilt, eventually, freePort, runCli, spawnCli, type CliChild } from './support/built-cli.js';
import { privateRedis, type PrivateRedis } from './support/redis-server.js';
import { connectClient, testSecret, token } from './support/socket.js';

// Private redis-server ports no other test uses: down at first, started mid-test.
const START_REDIS = 6482;
const SERVE_REDIS = 6483;
const DOWN_PG = 5482;

const readyz = async (base: string) => {
  const res = await fetch(`${base}/readyz`);
  return { status: res.status, body: (await res.json()) as { checks: Record<string, unknown> } };
};

async function sigterm(child: CliChild): Promise<number | null> {
  child.kill('SIGTERM');
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('start-up with a dependency down (built CLI)', () => {
  const db = useDb({ migrate: false }); // `start` migrates
  let redis: PrivateRedis | null = null;
  beforeAll(async () => {
    ensureBuilt();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('`start` with Redis down: /readyz 503 with the reason, recovers when Redis comes up, applies changes, SIGTERM exits 0', async () => {
    const secret = testSecret();
    const metricsPort = await freePort();
    const child = spawnCli(['start'], {
      DATABASE_URL: db.url,
      REDIS_URL: `redis://127.0.0.1:${START_REDIS}`,
      UNREAD_KEY_PREFIX: 'st:',
      PORT: '0',
      UNREAD_METRICS_PORT: String(metricsPort),
      SUPABASE_JWT_SECRET: secret,
      UNREAD_POLL_INTERVAL_MS: '50',
      LOG_LEVEL: 'info',
    });
    try {
      const url = await eventually(
        async () => /socket server\s+(http:\/\/\S+)/.exec(child.stdoutText())?.[1],
        20_000,
        'start did not print its URL',
      );
      const down = await eventually(
        async () => {
          const r = await readyz(url);
          return r.status === 503 && String(r.body.checks.startup).includes('Redis') ? r : undefined;
        },
        20_000,
        '/readyz did not say Redis is down',
      );
      expect(down.body.checks.redis).toBe(`Redis at 127.0.0.1:${START_REDIS} is unreachable (check REDIS_URL, and that Redis runs)`);
      expect((await readyz(`http://127.0.0.1:${metricsPort}`)).status).toBe(503); // the bridge's own /readyz agrees
      expect(child.stdoutText()).toContain('Next steps:');
      const index = await fetch(`${url}/`); // a first visit gets directions, not "not found"
      expect(index.status).toBe(200);
      expect(await index.json()).toMatchObject({ endpoints: { readyz: '/readyz', metrics: '/metrics' } });

      await new Promise((r) => setTimeout(r, 3_000)); // the process keeps waiting (no hang, no exit)
      expect(child.exitCode).toBeNull();
      redis = await privateRedis(START_REDIS);

      await eventually(async () => ((await readyz(url)).status === 200 ? true : undefined), 30_000, '/readyz did not recover');
      expect(child.stderrText()).toContain('migration up: 1764000000000_unread-sync-core'); // migrations are logged

      // A change reaches Redis and a socket client.
      const [user, room] = [uuid(), uuid()];
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${user}, ${uuid()}, 3)`;
      const client = await connectClient(url, { token: await token(secret, user) }, user);
      try {
        await eventually(async () => (client.last()?.totalUnreadCount === 3 ? true : undefined), 15_000, 'first badge');
        await db.sql`update chat_rooms set user_unread_count = 8 where id = ${room}`;
        await eventually(async () => (client.last()?.totalUnreadCount === 8 ? true : undefined), 15_000, 'badge after the change');
      } finally {
        client.close();
      }
      const r = new Redis(redis.url);
      try {
        expect((await new UnreadStore(r, 'st:').read(user))?.total).toBe(8);
      } finally {
        r.disconnect();
      }
    } finally {
      expect(await sigterm(child)).toBe(0);
      expect(child.stderrText()).not.toMatch(/uncaught/i);
    }
  });

  it('`serve` with Redis down answers /readyz 503 with the reason and recovers by itself; SIGTERM exits 0', async () => {
    const child = spawnCli(['serve'], {
      REDIS_URL: `redis://127.0.0.1:${SERVE_REDIS}`,
      PORT: '0',
      SUPABASE_JWT_SECRET: testSecret(),
      LOG_LEVEL: 'info',
    });
    let serveRedis: PrivateRedis | null = null;
    try {
      const url = await eventually(async () => /"url":"(http:[^"]+)"/.exec(child.stderrText())?.[1], 20_000, 'serve did not log its URL');
      const down = await eventually(
        async () => {
          const r = await readyz(url);
          return r.status === 503 ? r : undefined;
        },
        20_000,
        '/readyz did not say Redis is down',
      );
      expect(down.body.checks.redis).toBe(`Redis at 127.0.0.1:${SERVE_REDIS} is unreachable (check REDIS_URL, and that Redis runs)`);
      serveRedis = await privateRedis(SERVE_REDIS);
      await eventually(async () => ((await readyz(url)).status === 200 ? true : undefined), 30_000, '/readyz did not recover');
      // The reset channel (TRUNCATE, gap) was first tried while Redis was down: subscribed now.
      const probe = new Redis(serveRedis.url);
      try {
        await eventually(
          async () => {
            const [, n] = (await probe.call('PUBSUB', 'NUMSUB', 'unread:reset')) as [string, number];
            return n >= 1 ? true : undefined;
          },
          10_000,
          'the socket server never subscribed to the reset channel',
        );
      } finally {
        probe.disconnect();
      }
    } finally {
      expect(await sigterm(child)).toBe(0);
      expect(child.stderrText()).not.toMatch(/uncaught/i);
      await serveRedis?.stop();
    }
  });

  it('`serve` on a port already taken: one line, exit 1, nothing left running', async () => {
    const { createServer } = await import('node:net');
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    try {
      const res = await runCli(['serve'], { PORT: String(port), SUPABASE_JWT_SECRET: testSecret(), LOG_LEVEL: 'silent' }, 20_000);
      expect(res.code).toBe(1);
      expect(res.stderr.trim()).toBe(
        `unread-sync: 127.0.0.1:${port} is already in use (another unread-sync? set PORT or UNREAD_METRICS_PORT)`,
      );
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('`start` with Postgres down waits (503 naming Postgres), then migrates and runs once Postgres is up', async () => {
    const r = await createTestRedis();
    const child = spawnCli(['start'], {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${DOWN_PG}/postgres`,
      REDIS_URL: r.url,
      UNREAD_KEY_PREFIX: r.prefix,
      PORT: '0',
      UNREAD_METRICS_PORT: '0',
      LOG_LEVEL: 'info',
    });
    let pg: PrivatePostgres | null = null;
    try {
      const url = await eventually(async () => /socket server\s+(http:\/\/\S+)/.exec(child.stdoutText())?.[1], 20_000, 'no URL');
      const down = await eventually(
        async () => {
          const res = await readyz(url);
          return res.status === 503 && String(res.body.checks.startup).includes('Postgres') ? res : undefined;
        },
        20_000,
        '/readyz did not say Postgres is down',
      );
      expect(down.body.checks.startup).toBe(`Postgres at 127.0.0.1:${DOWN_PG} is unreachable (check DATABASE_URL, and that Postgres runs)`);
      pg = privatePostgres(DOWN_PG); // initdb + start: several seconds in which `start` keeps retrying
      await eventually(async () => ((await readyz(url)).status === 200 ? true : undefined), 60_000, '/readyz did not recover');
      expect(child.stderrText()).toContain('migration up: 1764000000002_realtime-broadcast');
      expect(child.stderrText()).toContain('dependencies are up');
    } finally {
      expect(await sigterm(child)).toBe(0);
      pg?.stop();
      await r.cleanup();
    }
  });
});
