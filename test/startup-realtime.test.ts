/**
 * Issue 12, item 1 for the third dependency: a `bridge` on the Supabase transport started while
 * Realtime is down waits (its /readyz says the bridge topics are not subscribed), keeps badges
 * right through catch-up reads meanwhile, and joins by itself once Realtime comes up.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../src/read/reader.js';
import { uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { ensureBuilt, eventually, freePort, spawnCli, type CliChild } from './support/built-cli.js';
import { prepareRealtimeDb, signTestJwt, startRealtimeServer, type RealtimeServer } from './support/realtime-server.js';

const JWT_SECRET = 'unread-sync-startup-realtime-secret-of-32-chars-or-more';

const readyz = async (port: number) => {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: (await res.json()) as { checks: Record<string, unknown> } };
};

async function sigterm(child: CliChild): Promise<number | null> {
  child.kill('SIGTERM');
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('start-up with Realtime down (built CLI, UNREAD_SOURCE=supabase)', () => {
  const { db, r } = useEnv({ db: { migrate: false, prefix: 'sbup' } });
  beforeAll(async () => {
    ensureBuilt();
    await prepareRealtimeDb(db.url);
  }, 60_000);

  it('waits with /readyz 503 naming the unsubscribed topics, stays correct by catch-up, joins when Realtime is up; SIGTERM exits 0', async () => {
    const realtimePort = await freePort();
    const opsPort = await freePort();
    const child = spawnCli(['bridge'], {
      DATABASE_URL: db.url,
      REDIS_URL: r.url,
      UNREAD_KEY_PREFIX: r.prefix,
      UNREAD_SOURCE: 'supabase',
      SUPABASE_URL: `http://127.0.0.1:${realtimePort}`,
      SUPABASE_SERVICE_ROLE_KEY: await signTestJwt(JWT_SECRET, { role: 'service_role' }),
      UNREAD_CATCHUP_INTERVAL_MS: '300',
      UNREAD_METRICS_PORT: String(opsPort),
      LOG_LEVEL: 'info',
    });
    let server: RealtimeServer | null = null;
    try {
      const down = await eventually(
        async () => {
          const res = await readyz(opsPort).catch(() => undefined);
          return res?.status === 503 && /bridge topics subscribed/.test(String(res.body.checks.source)) ? res : undefined;
        },
        30_000,
        '/readyz did not say the Realtime topics are down',
      );
      expect(String(down.body.checks.source)).toMatch(/realtime: 0\/\d+ bridge topics subscribed/);

      // Catch-up reads keep the badge right while the live path is down.
      const user = uuid();
      const room = uuid();
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${user}, ${uuid()}, 4)`;
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
      expect(await reader.getTotal(user)).toBe(4);
      await db.sql`update chat_rooms set user_unread_count = 9 where id = ${room}`;
      await eventually(
        async () => ((await r.store.read(user))?.total === 9 ? true : undefined),
        15_000,
        'catch-up did not apply the change',
      );

      server = await startRealtimeServer({ databaseUrl: db.url, jwtSecret: JWT_SECRET, port: realtimePort });
      await eventually(
        async () => ((await readyz(opsPort)).status === 200 ? true : undefined),
        60_000,
        '/readyz did not recover after Realtime came up',
      );
    } finally {
      expect(await sigterm(child)).toBe(0);
      expect(child.stderrText()).not.toMatch(/uncaught/i);
      await server?.close();
    }
  });
});
