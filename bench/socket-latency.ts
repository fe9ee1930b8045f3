/**
 * Commit-to-socket-client latency: UPDATE chat_rooms (acknowledged commit) -> triggers -> bridge
 * -> Redis Lua + SPUBLISH -> socket server -> socket.io client over loopback.
 *
 *   npx tsx bench/socket-latency.ts [writesPerSecond=200] [seconds=10] [users=100]
 *
 * Uses TEST_DATABASE_URL / TEST_REDIS_URL (defaults: local Postgres and Redis); creates and drops
 * its own database and key prefix. Prints p50/p90/p99/max in milliseconds.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { io as ioClient, type Socket } from 'socket.io-client';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { migrate } from '../src/migrate.js';
import { startBridge } from '../src/launch.js';
import { mintToken } from '../src/socket/auth.js';
import type { TotalUnreadPayload } from '../src/socket/badges.js';
import { loadSocketConfig } from '../src/socket/config.js';
import { startSocketServer } from '../src/socket/server.js';
import { deletePrefix } from '../test/support/redis-keys.js';

const rate = Number(process.argv[2] ?? 200);
const seconds = Number(process.argv[3] ?? 10);
const userCount = Number(process.argv[4] ?? 100);
const admin = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const name = `us_lat_${randomBytes(4).toString('hex')}`;
const prefix = `lat${randomBytes(3).toString('hex')}:`;
const secret = randomBytes(32).toString('hex');
const log = createLogger('silent');

const adminSql = postgres(admin, { max: 1, onnotice: () => {} });
await adminSql.unsafe(`create database ${name}`);
const dbUrl = new URL(admin);
dbUrl.pathname = `/${name}`;
const url = dbUrl.toString();
await migrate({ databaseUrl: url, direction: 'up' });
const sql = postgres(url, { max: 8, onnotice: () => {} });

const users: string[] = Array.from({ length: userCount }, () => randomUUID());
const roomOf = new Map<string, string>();
for (const u of users) {
  const id = randomUUID();
  roomOf.set(u, id);
  await sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count) values (${id}, ${u}, ${randomUUID()}, 0)`;
}

// Production defaults except where the services are.
const bridge = startBridge(loadConfig({ DATABASE_URL: url, REDIS_URL: redisUrl, UNREAD_KEY_PREFIX: prefix, LOG_LEVEL: 'silent' }), log);
const server = await startSocketServer(
  loadSocketConfig({
    PORT: '0',
    REDIS_URL: redisUrl,
    UNREAD_KEY_PREFIX: prefix,
    SUPABASE_JWT_SECRET: secret,
    LOG_LEVEL: 'silent',
    UNREAD_SOCKET_COALESCE_MS: process.env.UNREAD_SOCKET_COALESCE_MS,
  }),
  log,
);

// Per user: writes not yet seen by the client, as [expectedTotal, committedAt].
const pending = new Map<string, Array<[number, number]>>();
const latencies: number[] = [];
/** [ms since start, latency, commit->SPUBLISH part] of slow deliveries, to tell start-up transients from steady state. */
const slow: Array<[number, number, number]> = [];
let start = 0;
const sockets: Socket[] = [];
await Promise.all(
  users.map(async (u) => {
    pending.set(u, []);
    const socket = ioClient(server.url, {
      transports: ['websocket'],
      auth: { token: await mintToken(secret, u, { expiresInSeconds: 3600 }) },
    });
    sockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('total-unread-count-updated', () => resolve());
      socket.once('connect_error', reject);
    });
    socket.on('total-unread-count-updated', (p: TotalUnreadPayload) => {
      const now = performance.now();
      const list = pending.get(u) as Array<[number, number]>;
      lastSeen.set(u, Math.max(lastSeen.get(u) ?? 0, p.totalUnreadCount));
      while (list.length > 0 && (list[0] as [number, number])[0] <= p.totalUnreadCount) {
        const [, at] = list.shift() as [number, number];
        latencies.push(Math.max(0, now - at));
        if (now - at > 200)
          slow.push([Math.round(at - start), Math.round(now - at), Math.round((publishedAt(u, p.totalUnreadCount) ?? NaN) - at)]);
      }
    });
  }),
);

// Bridge-side probe: first time Redis published a total >= expected, per user.
const probe = new Redis(redisUrl);
const published = new Map<string, Array<[number, number]>>(users.map((u) => [u, []]));
probe.on('smessage', (channel: string, message: string) => {
  const u = channel.slice(channel.indexOf('{') + 1, -1);
  published.get(u)?.push([Number(message.split(' ')[0]), performance.now()]);
});
for (const u of users) await probe.ssubscribe(`${prefix}c:{${u}}`);
const lastSeen = new Map<string, number>();
const publishedAt = (u: string, expected: number) => published.get(u)?.find(([t]) => t >= expected)?.[1];

const totals = new Map<string, number>(users.map((u) => [u, 0]));
const total = rate * seconds;
start = performance.now();
const inflight: Promise<void>[] = [];
for (let i = 0; i < total; i++) {
  const due = start + (i * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  const u = users[Math.floor(Math.random() * users.length)] as string;
  const expected = (totals.get(u) ?? 0) + 1;
  totals.set(u, expected);
  // Serialised per user is not needed: increments commute; expected totals only grow.
  inflight.push(
    sql`update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = ${roomOf.get(u) as string}`.then(() => {
      // The badge can beat the commit acknowledgement back to this process: that counts as 0 ms.
      if ((lastSeen.get(u) ?? 0) >= expected) {
        latencies.push(0);
        return;
      }
      const list = pending.get(u) as Array<[number, number]>;
      list.push([expected, performance.now()]);
      list.sort((a, b) => a[0] - b[0]);
    }),
  );
}
await Promise.all(inflight);
const achieved = total / ((performance.now() - start) / 1000);
const deadline = Date.now() + 15_000;
while ([...pending.values()].some((l) => l.length > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const missing = [...pending.values()].reduce((a, l) => a + l.length, 0);

latencies.sort((a, b) => a - b);
const q = (p: number) => (latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN).toFixed(1);
console.log(
  JSON.stringify({
    writesPerSecondTarget: rate,
    writesPerSecondAchieved: Math.round(achieved),
    seconds,
    users: userCount,
    samples: latencies.length,
    notDelivered: missing,
    p50ms: q(0.5),
    p90ms: q(0.9),
    p99ms: q(0.99),
    maxms: (latencies.at(-1) ?? NaN).toFixed(1),
    over200ms: slow.length,
    firstSlow: slow.slice(0, 5),
  }),
);

probe.disconnect();
for (const s of sockets) s.close();
await server.close();
await bridge.stop();
await sql.end({ timeout: 5 });
await adminSql.unsafe(`drop database if exists ${name} with (force)`);
await adminSql.end();
const r = new Redis(redisUrl);
await deletePrefix(r, prefix);
r.disconnect();
