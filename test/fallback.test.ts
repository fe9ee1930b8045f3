import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { DbFallback, FallbackUnavailableError } from '../src/read/fallback.js';
import { UnreadReader } from '../src/read/reader.js';
import { UnreadStore } from '../src/store/store.js';
import type { Sql } from '../src/db.js';
import { createTestDb, uuid } from './support/env.js';
import { useDb } from './support/fixture.js';
import { privateRedis, type PrivateRedis } from './support/redis-server.js';

describe('reads during a Redis outage', () => {
  const db = useDb();
  let redisServer: PrivateRedis;
  beforeAll(async () => {
    redisServer = await privateRedis(6391);
  });
  afterAll(async () => {
    await redisServer?.stop();
  });

  it('falls back to a parameterized database read, capped, and refuses beyond the cap', async () => {
    const u = uuid();
    const room = uuid();
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${uuid()}, 4)`;
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1, enableAutoPipelining: true });
    redis.on('error', () => {});
    const store = new UnreadStore(redis, 'fb:');
    await store.hydrate(new Map([[u, [{ roomId: room, unread: 4 }]]]));
    const fallback = new DbFallback(db.sql, { maxConcurrent: 2 });
    const reader = new UnreadReader(store, { fallback, hydrateTimeoutMs: 500 });
    expect(await reader.getCounts(u)).toMatchObject({ total: 4, seq: expect.any(Number) });

    await redisServer.kill();
    const counts = await reader.getCounts(u);
    expect(counts).toMatchObject({ total: 4, unreadRooms: 1, rooms: { [room]: 4 }, fromDatabase: true });
    expect(await reader.getTotal(u)).toBe(4);

    // 20 readers at once: at most 2 reach the database, the others are refused at once.
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => fallback.counts(u)));
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((r) => (r as PromiseRejectedResult).reason instanceof FallbackUnavailableError)).toBe(true);
    expect(results.some((r) => r.status === 'fulfilled')).toBe(true);

    await redisServer.start();
    redis.disconnect();
  });

  it('without a fallback a Redis outage is an error (the socket layer keeps the last total)', async () => {
    const redis = new Redis('redis://127.0.0.1:6392', { maxRetriesPerRequest: 1, lazyConnect: true, retryStrategy: () => null });
    redis.on('error', () => {});
    const reader = new UnreadReader(new UnreadStore(redis, 'fb:'), { hydrateTimeoutMs: 200 });
    await expect(reader.getTotal(uuid())).rejects.toThrow();
    redis.disconnect();
  });

  it('the circuit opens after repeated database errors and lets one trial through later', async () => {
    const dead = postgres('postgres://postgres@127.0.0.1:1/none', { max: 1, connect_timeout: 1 }) as unknown as Sql;
    const fallback = new DbFallback(dead, { failureThreshold: 2, openMs: 200 });
    for (let i = 0; i < 2; i++) await expect(fallback.counts(uuid())).rejects.toThrow(FallbackUnavailableError);
    expect(fallback.state).toBe('open');
    await expect(fallback.counts(uuid())).rejects.toThrow(/circuit open/);
    await new Promise((r) => setTimeout(r, 250));
    expect(fallback.state).toBe('half-open');
    await dead.end({ timeout: 1 });
  });
});

describe('socket server during a Redis outage', () => {
  it('with UNREAD_DB_FALLBACK a client connecting during the outage gets the database total; others keep theirs', async () => {
    const { startServe: startSocketServer } = await import('../src/launch.js');
    const { connectClient, socketConfig, testSecret, token, until } = await import('./support/socket.js');
    const db = await createTestDb();
    const server = await privateRedis(6398);
    const secret = testSecret();
    const prefix = 'sfb:';
    const config = socketConfig({ url: server.url, prefix } as never, secret, {
      UNREAD_DB_FALLBACK: 'true',
      DATABASE_URL: db.url,
      UNREAD_HYDRATE_TIMEOUT_MS: '500',
    });
    const redis = new Redis(server.url, { maxRetriesPerRequest: 1, enableAutoPipelining: true });
    redis.on('error', () => {});
    const running = await startSocketServer(config, (await import('../src/log.js')).createLogger('silent'), { redis });
    try {
      const [a, b, room] = [uuid(), uuid(), uuid()];
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
                   values (${room}, ${a}, ${b}, 3, 5)`;
      const store = new UnreadStore(redis, prefix);
      await store.hydrate(new Map([[a, [{ roomId: room, unread: 3 }]]]));
      const early = await connectClient(running.url, { token: await token(secret, a) }, a);
      await until(() => early.last()?.totalUnreadCount === 3, 5_000, 'total before the outage');

      await server.kill();
      const late = await connectClient(running.url, { token: await token(secret, b) }, b);
      // Generous: each failed Redis read waits out ioredis' reconnect attempts, slower on a busy machine.
      await until(() => late.last()?.totalUnreadCount === 5, 20_000, 'fallback total for a new client');
      expect(early.last()?.totalUnreadCount).toBe(3); // kept, never reset to something made up
      early.close();
      late.close();
    } finally {
      await running.close();
      redis.disconnect();
      await server.stop();
      await db.drop();
    }
  });
});
