import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { UnreadStore } from '../src/store/store.js';
import { testConfig, testLogger, uuid, waitForBridge, type TestRedis } from './support/env.js';
import { useDb } from './support/fixture.js';
import { privateRedis, type PrivateRedis } from './support/redis-server.js';

const port = 19_000 + Math.floor(Math.random() * 1_000);
const get = async (path: string) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
};
const metric = (text: string, name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1]);

describe('bridge /metrics, /healthz, /readyz', () => {
  const db = useDb();
  let server: PrivateRedis;
  let running: RunningBridge;
  let redis: Redis;
  beforeAll(async () => {
    server = await privateRedis(6393);
    redis = new Redis(server.url, { maxRetriesPerRequest: 1, enableAutoPipelining: true });
    redis.on('error', () => {});
    const r = { url: server.url, prefix: 'ops:' } as TestRedis;
    running = startBridge(testConfig(db, r, { UNREAD_METRICS_PORT: String(port) }), testLogger(), { redis });
  });
  afterAll(async () => {
    await running?.stop();
    redis?.disconnect();
    await server?.stop();
  });

  it('exposes real figures and real checks', async () => {
    const users = Array.from({ length: 5 }, () => uuid());
    await db.sql`insert into chat_rooms ${db.sql(users.map((u) => ({ id: uuid(), user_id: u, company_id: uuid(), user_unread_count: 2 })))}`;
    const reader = new UnreadReader(new UnreadStore(redis, 'ops:'));
    await Promise.all(users.map((u) => reader.getTotal(u)));
    await db.sql`update chat_rooms set user_unread_count = 3 where user_id = any(${users})`;
    await waitForBridge(db.sql);

    expect((await get('/healthz')).status).toBe(200);
    const ready = await get('/readyz');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toMatchObject({ status: 'ready', checks: { source: 'ok', redis: 'ok', bridge: 'ok' } });

    const m = (await get('/metrics')).text;
    expect(metric(m, 'unread_sync_changes_applied_total')).toBe(5);
    expect(metric(m, 'unread_sync_hydrations_total')).toBe(5);
    expect(metric(m, 'unread_sync_log_backlog')).toBe(0);
    expect(metric(m, 'unread_sync_redis_used_memory_bytes')).toBeGreaterThan(100_000);
    expect(metric(m, 'unread_sync_redis_bytes_per_user')).toBeGreaterThan(50);
    expect(metric(m, 'unread_sync_commit_to_apply_seconds_count')).toBe(5);
    expect(m).toContain('process_cpu_seconds_total');

    await server.kill();
    const down = await get('/readyz');
    expect(down.status).toBe(503);
    expect(JSON.parse(down.text).checks.redis).not.toBe('ok');
    await server.start();
  });
});
