import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startBridge, type RunningBridge } from '../../src/launch.js';
import { loadSocketConfig } from '../../src/socket/config.js';
import { startSocketServer, type RunningSocketServer } from '../../src/socket/server.js';
import { testLogger, truth, uuid, waitForBridge } from '../support/env.js';
import { useDb } from '../support/fixture.js';
import { connectClient, sum, testSecret, token, until, type BadgeClient } from '../support/socket.js';
import { startCluster, type LocalCluster } from './cluster.js';
import { clusterConfig, clusterRedis, sleep, type ClusterRedis } from './support.js';

/**
 * Socket fan-out on the cluster: two socket servers, each with its own cluster client, get every
 * user's changes through sharded pub/sub (SSUBSCRIBE on the master owning the user's slot),
 * also after a master failover moved those slots. The reconcile loop is off: pub/sub alone.
 */

const USERS = 60;
const CLIENTS = 180;
const ROOMS = 240;

let cluster: LocalCluster;
const db = useDb();
let r: ClusterRedis;
let bridge: RunningBridge;
const socketRedis: ClusterRedis[] = [];
const servers: RunningSocketServer[] = [];
const clients: BadgeClient[] = [];
const secret = testSecret();

beforeAll(async () => {
  cluster = await startCluster(7121);
  r = clusterRedis(cluster.seeds);
  bridge = startBridge(clusterConfig(db, cluster.seeds, r.prefix), testLogger());
  const config = loadSocketConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    UNREAD_KEY_PREFIX: r.prefix,
    SUPABASE_JWT_SECRET: secret,
    UNREAD_SOCKET_RECONCILE_MS: '0',
    UNREAD_HYDRATE_TIMEOUT_MS: '10000',
    LOG_LEVEL: 'silent',
  });
  for (let i = 0; i < 2; i++) {
    // Each server has its own cluster connections, as separate processes would.
    const own = clusterRedis(cluster.seeds, r.prefix);
    socketRedis.push(own);
    servers.push(await startSocketServer(config, testLogger(), { redis: own.redis }));
  }
});

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(servers.map((s) => s.close()));
  await Promise.all(socketRedis.map((s) => s.cleanup()));
  await bridge?.stop();
  await r?.cleanup();
  await cluster?.stop();
});

async function writes(rooms: string[], users: string[], count: number) {
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let k = 0; k < count; k++) {
        const room = rooms[Math.floor(Math.random() * rooms.length)]!;
        const op = Math.random();
        if (op < 0.6) await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${room}`;
        else if (op < 0.85) await db.sql`update chat_rooms set company_unread_count = ${Math.floor(Math.random() * 6)} where id = ${room}`;
        else if (op < 0.95) await db.sql`update chat_rooms set user_unread_count = 0 where id = ${room}`;
        else await db.sql`update chat_rooms set company_id = ${users[Math.floor(Math.random() * users.length)]!} where id = ${room}`;
      }
    }),
  );
}

async function expectClientsAtTruth(what: string) {
  await waitForBridge(db.sql);
  const t = await truth(db.sql);
  await until(() => clients.every((c) => c.last()?.totalUnreadCount === sum(t[c.userId])), 30_000, what);
  for (const c of clients) {
    expect(c.last()?.unreadRooms).toBe(Object.keys(t[c.userId] ?? {}).length);
    expect(c.events.every((e) => e.userId === c.userId)).toBe(true);
    const seqs = c.events.map((e) => e.seq);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number);
  }
}

it('clients on two socket servers follow their badges through sharded pub/sub, also after a master failover', async () => {
  const users = Array.from({ length: USERS }, () => uuid());
  const rooms = Array.from({ length: ROOMS }, () => uuid());
  await db.sql`insert into chat_rooms ${db.sql(
    rooms.map((id, i) => ({
      id,
      user_id: users[i % USERS],
      company_id: users[(i * 7 + 3) % USERS],
      user_unread_count: i % 3,
      company_unread_count: 0,
    })),
  )}`;
  for (let i = 0; i < CLIENTS; i++) {
    const user = users[i % USERS]!;
    // Every user has clients on both servers.
    const server = servers[Math.floor(i / USERS) % 2]!;
    clients.push(await connectClient(server.url, { token: await token(secret, user, 600) }, user, 20_000));
  }
  await until(() => clients.every((c) => c.events.length > 0), 30_000, 'every client got a first total');

  await writes(rooms, users, 150);
  await expectClientsAtTruth('clients at the truth after the load');
  const firstPhase = clients.reduce((a, c) => a + c.events.length, 0);

  // Sharded subscriptions live on masters: after a failover they must follow the slots.
  const failover = await cluster.killMaster();
  await sleep(2_500); // ioredis refreshes the slot map and re-subscribes on the promoted replica
  const seqBefore = new Map(clients.map((c) => [c, c.last()?.seq ?? 0]));
  // Every user gets a change after the failover, so every client must receive a message.
  await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1, company_unread_count = company_unread_count + 1`;
  await writes(rooms, users, 50);
  await expectClientsAtTruth('clients at the truth after the failover');
  for (const c of clients) expect(c.last()?.seq ?? 0).toBeGreaterThan(seqBefore.get(c) ?? 0);
  const total = clients.reduce((a, c) => a + c.events.length, 0);
  // Badge changes travel as shard messages (master -> its replicas only), not as cluster-wide
  // PUBLISH broadcasts; the few broadcasts are hydration wake-ups.
  const stats = { publish: 0, publishshard: 0 };
  for (const port of await cluster.masters()) {
    const node = new Redis({ host: '127.0.0.1', port });
    const info = (await node.call('CLUSTER', 'INFO')) as string;
    node.disconnect();
    stats.publish += Number(/cluster_stats_messages_publish_sent:(\d+)/.exec(info)?.[1] ?? 0);
    stats.publishshard += Number(/cluster_stats_messages_publishshard_sent:(\d+)/.exec(info)?.[1] ?? 0);
  }
  expect(stats.publishshard).toBeGreaterThan(stats.publish);
  console.log(
    `[cluster] fan-out: ${CLIENTS} clients / ${USERS} users on 2 servers; ${firstPhase} events before, ${total - firstPhase} after ` +
      `master ${failover.port} failed over to ${failover.promoted} (${failover.failoverMs} ms); every client at the truth; ` +
      `bus messages sent by masters: ${stats.publishshard} shard (to own replicas), ${stats.publish} broadcast`,
  );
});
