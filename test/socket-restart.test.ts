import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { startSocketServer, type RunningSocketServer } from '../src/socket/server.js';
import { testConfig, testLogger, truth, uuid, waitForBridge, type TestRedis } from './support/env.js';
import { useDb } from './support/fixture.js';
import { privateRedis, type PrivateRedis } from './support/redis-server.js';
import { connectClient, socketConfig, testSecret, token, until } from './support/socket.js';

/** A real Redis restart (process killed, keyspace gone) while socket clients stay connected. */
describe('Redis restarted while socket clients are connected', () => {
  const db = useDb();
  let server: PrivateRedis;
  let bridge: RunningBridge;
  let sockets: RunningSocketServer;
  const secret = testSecret();
  const r = { url: '', prefix: 'restart:' } as TestRedis;

  beforeAll(async () => {
    server = await privateRedis(6399);
    r.url = server.url;
    bridge = startBridge(testConfig(db, r), testLogger());
    sockets = await startSocketServer(socketConfig(r, secret, { UNREAD_SOCKET_RECONCILE_MS: '1000' }), testLogger());
  });
  afterAll(async () => {
    await sockets?.close();
    await bridge?.stop();
    await server?.stop();
  });

  it('every client gets the correct total after recovery, and changes flow again', async () => {
    const users = Array.from({ length: 20 }, () => uuid());
    const rooms = users.map(() => uuid());
    await db.sql`insert into chat_rooms ${db.sql(users.map((u, i) => ({ id: rooms[i], user_id: u, company_id: uuid(), user_unread_count: i + 1 })))}`;
    const clients = await Promise.all(users.map(async (u) => connectClient(sockets.url, { token: await token(secret, u) }, u)));
    await until(() => clients.every((c, i) => c.last()?.totalUnreadCount === i + 1), 15_000, 'first totals');

    const metric = async (name: string) =>
      Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${sockets.url}/metrics`)).text())?.[1]);
    expect(await metric('unread_sync_socket_connections')).toBe(20);
    expect(await metric('unread_sync_socket_users')).toBe(20);
    expect(await metric('unread_sync_socket_emits_total')).toBeGreaterThanOrEqual(20);
    expect(await metric('unread_sync_cache_misses_total')).toBeGreaterThan(0); // nothing was cached at first
    expect((await fetch(`${sockets.url}/readyz`)).status).toBe(200);

    await server.kill(); // the keyspace is gone with the process
    expect((await fetch(`${sockets.url}/readyz`)).status).toBe(503);
    await db.sql`update chat_rooms set user_unread_count = user_unread_count + 10 where id = any(${rooms})`;
    await new Promise((res) => setTimeout(res, 500));
    await server.start();

    await waitForBridge(db.sql, 'default', 30_000);
    const t = await truth(db.sql);
    const expected = users.map((u) => Object.values(t[u] ?? {}).reduce((a, b) => a + b, 0));
    expect(expected[0]).toBe(11);
    await until(() => clients.every((c, i) => c.last()?.totalUnreadCount === expected[i]), 30_000, 'totals after recovery');

    await db.sql`update chat_rooms set user_unread_count = 0 where id = ${rooms[0]!}`;
    await until(() => clients[0]!.last()?.totalUnreadCount === 0, 15_000, 'change after recovery');
    for (const c of clients) {
      const seqs = c.events.map((e) => e.seq);
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]!);
      c.close();
    }
  });
});
