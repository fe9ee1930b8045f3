/**
 * Opt-in: the supabase source against a REAL Supabase project (the hosted Realtime server, its
 * replication slot, Supavisor). Runs only when these are set, otherwise it says why it skipped:
 *   SUPABASE_URL               https://<ref>.supabase.co
 *   SUPABASE_SERVICE_ROLE_KEY  service role key (JWT or sb_secret_...)
 *   SUPABASE_DB_URL            Postgres URL of the project (the transaction pooler, port 6543, works)
 *   SUPABASE_JWT_SECRET        optional: also checks RLS with a minted user JWT
 * The project must have supabase/migrations applied (`supabase db push`). The test writes rooms
 * with random user ids into public.chat_rooms and deletes them afterwards.
 */
import { randomUUID } from 'node:crypto';
import { RealtimeClient, type WebSocketLikeConstructor } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPooled, supabaseQueries, type Sql } from '../src/db.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { SupabaseSource, userTopic, bridgeTopic } from '../src/sources/supabase.js';
import { createTestRedis, expectNoDrift, testLogger, type TestRedis } from './support/env.js';
import { loadConfig } from '../src/config.js';
import { signTestJwt } from './support/realtime-server.js';

const env = {
  url: process.env.SUPABASE_URL,
  key: process.env.SUPABASE_SERVICE_ROLE_KEY,
  db: process.env.SUPABASE_DB_URL,
  jwtSecret: process.env.SUPABASE_JWT_SECRET,
};
const missing = Object.entries({ SUPABASE_URL: env.url, SUPABASE_SERVICE_ROLE_KEY: env.key, SUPABASE_DB_URL: env.db })
  .filter(([, v]) => !v)
  .map(([k]) => k);
if (missing.length > 0) {
  console.log(`test/supabase-live.test.ts skipped: set ${missing.join(', ')} to run it against a real Supabase project`);
}

async function waitFor(cond: () => boolean | Promise<boolean>, label: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${label}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe.skipIf(missing.length > 0)('supabase source against a real Supabase project', () => {
  let sql: Sql;
  let r: TestRedis;
  let running: RunningBridge;
  let src: SupabaseSource;
  const users = Array.from({ length: 10 }, () => randomUUID());
  const bridgeName = `live-test-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    sql = connectPooled(env.db!, { max: 2, applicationName: 'unread-sync live test' });
    r = await createTestRedis();
  }, 60_000);

  afterAll(async () => {
    await running?.stop();
    if (sql) {
      await sql`delete from public.chat_rooms where user_id = any(${users}::uuid[])`.catch(() => {});
      await sql`delete from unread_sync.bridge_state where name = ${bridgeName}`.catch(() => {});
      await sql`delete from unread_sync.bridge_lease where name = ${bridgeName}`.catch(() => {});
      await sql.end({ timeout: 5 });
    }
    await r?.cleanup();
  }, 60_000);

  it('preflight: broadcast installed and a realtime.messages partition for today (the daily-partition trap)', async () => {
    const [row] = await sql<{ installed: boolean; partition: string | null }[]>`
      select exists (select 1 from unread_sync.meta where key = 'realtime_installed') as installed,
             to_regclass(format('realtime.messages_%s', to_char(now() at time zone 'utc', 'YYYY_MM_DD')))::text as partition`;
    expect(row?.installed, 'supabase/migrations not applied, or applied where no realtime schema existed').toBe(true);
    expect(row?.partition, 'no partition for today: realtime.send() would only WARN and nothing would stream').not.toBeNull();
  });

  it('mirrors UPDATEs through hosted Realtime with 0 drift; reports commit-to-Redis latency', async () => {
    const config = loadConfig({
      DATABASE_URL: env.db,
      REDIS_URL: r.url,
      UNREAD_KEY_PREFIX: r.prefix,
      UNREAD_SOURCE: 'supabase',
      SUPABASE_URL: env.url,
      SUPABASE_SERVICE_ROLE_KEY: env.key,
      UNREAD_BRIDGE_NAME: bridgeName,
      UNREAD_METRICS_PORT: '0',
      UNREAD_CATCHUP_INTERVAL_MS: '60000',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    });
    src = new SupabaseSource({
      supabaseUrl: config.supabaseUrl!,
      serviceRoleKey: config.supabaseServiceRoleKey!,
      databaseUrl: config.databaseUrl,
      bridgeName,
      shards: config.realtimeShards,
      catchupIntervalMs: config.catchupIntervalMs,
      batchSize: config.batchSize,
      logMinAgeSeconds: config.logMinAgeSeconds,
      logMaxAgeSeconds: config.logMaxAgeSeconds,
      log: testLogger(),
    });
    running = startBridge(config, testLogger(), { source: src, redis: r.redis });
    await waitFor(() => src.subscribedAll(), 'all bridge topics subscribed', 30_000);

    const rooms = await sql<{ id: string; user_id: string }[]>`
      insert into public.chat_rooms (user_id, company_id, user_unread_count, company_unread_count, is_active)
      select u, null, 1, 0, true from unnest(${users}::uuid[]) u returning id, user_id`;
    running.bridge.requestHydration(users);
    await waitFor(async () => (await Promise.all(users.map((u) => r.store.read(u)))).every(Boolean), 'hydrated');

    const latencies: number[] = [];
    for (let i = 0; i < 50; i++) {
      const room = rooms[i % rooms.length]!;
      const [row] = await sql<{ n: number }[]>`
        update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = ${room.id} returning user_unread_count as n`;
      const t0 = performance.now();
      await waitFor(async () => (await r.store.read(room.user_id))?.rooms[room.id] === row!.n, 'mirrored', 15_000);
      latencies.push(performance.now() - t0);
    }
    latencies.sort((a, b) => a - b);
    const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
    console.log(
      `real Supabase: commit-to-Redis p50 ${at(50).toFixed(1)} ms, p99 ${at(99).toFixed(1)} ms; ` +
        `live ${src.stats.liveDelivered}, catch-up rows ${src.stats.catchupRows}, replication_ready ${src.stats.replicationReady}`,
    );
    expect(src.stats.liveDelivered, 'nothing arrived through Realtime (all applied by catch-ups)').toBeGreaterThan(0);
    await expectNoDrift(sql, r.store, users);

    // What issue 11 asks a real project to confirm: partitions ahead, one message per transaction
    // and topic, a green readiness (not rate-limited), replication_ready received.
    const parts = await supabaseQueries.messagePartitions(sql);
    const [{ n: before } = { n: 0 }] = await sql<{ n: number }[]>`
      select count(*)::int as n from realtime.messages where topic like 'unread-sync:bridge:%' and inserted_at > now() - interval '1 hour'`;
    await sql`update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = any(${rooms.map((x) => x.id)}::uuid[])`;
    const [{ n: after } = { n: 0 }] = await sql<{ n: number }[]>`
      select count(*)::int as n from realtime.messages where topic like 'unread-sync:bridge:%' and inserted_at > now() - interval '1 hour'`;
    let readiness = 'ok';
    await src.check().catch((err: unknown) => (readiness = (err as Error).message));
    console.log(
      `real Supabase: partitions ${JSON.stringify(parts)}; one ${rooms.length}-room transaction sent ${after - before} bridge messages ` +
        `(shards ${config.realtimeShards}); readiness ${readiness}; replication_ready ${src.stats.replicationReady}; rate-limit shutdowns ${src.stats.rateLimitShutdowns}`,
    );
    expect(parts.every((p) => p.present)).toBe(true);
    expect(after - before).toBeLessThanOrEqual(config.realtimeShards);
    expect(src.stats.replicationReady).toBeGreaterThanOrEqual(config.realtimeShards);
  }, 120_000);

  it.skipIf(!env.jwtSecret)(
    'RLS: a user JWT joins its own badge topic only',
    async () => {
      const token = await signTestJwt(env.jwtSecret!, { role: 'authenticated', sub: users[0]!, aud: 'authenticated' });
      const join = async (topic: string) => {
        const client = new RealtimeClient(`${env.url!.replace(/^http/, 'ws')}/realtime/v1`, {
          params: { apikey: env.key! },
          transport: WebSocket as unknown as WebSocketLikeConstructor,
        });
        await client.setAuth(token);
        const started = Date.now();
        const status = await new Promise<string>((resolve) => {
          client.channel(topic, { config: { private: true } }).subscribe((s) => {
            if (s !== 'CLOSED') resolve(s);
          });
        });
        // Real join errors come after CHANNEL_ERROR_BACKOFF_MS (5 s): printed to confirm it.
        console.log(`real Supabase: join ${topic} -> ${status} after ${Date.now() - started} ms`);
        await client.removeAllChannels();
        return status;
      };
      expect(await join(userTopic(users[0]!))).toBe('SUBSCRIBED');
      expect(await join(userTopic(users[1]!))).toBe('CHANNEL_ERROR');
      expect(await join(bridgeTopic(0))).toBe('CHANNEL_ERROR');
    },
    60_000,
  );
});
