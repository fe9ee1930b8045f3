/**
 * Commit -> client-state latency through the client library (`unread-sync/client`):
 * UPDATE chat_rooms (acknowledged commit) -> triggers -> bridge -> Redis -> socket server ->
 * connectUnreadBadges state. Two figures: until the client's `total` shows the commit, and until
 * its `rooms[roomId]` does (per-room counts).
 *
 *   npx tsx bench/client-latency.ts [writesPerSecond=1000] [seconds=10] [users=100]
 *
 * Uses TEST_DATABASE_URL / TEST_REDIS_URL (defaults: local Postgres and Redis); creates and drops
 * its own database and key prefix. Prints p50/p90/p99/max in milliseconds.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { connectUnreadBadges, type UnreadBadgesClient } from '../src/client/index.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { migrate } from '../src/migrate.js';
import { startBridge } from '../src/launch.js';
import { mintToken } from '../src/socket/auth.js';
import { loadSocketConfig } from '../src/socket/config.js';
import { startSocketServer } from '../src/socket/server.js';

const rate = Number(process.argv[2] ?? 1000);
const seconds = Number(process.argv[3] ?? 10);
const userCount = Number(process.argv[4] ?? 100);
const admin = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const name = `us_clat_${randomBytes(4).toString('hex')}`;
const prefix = `clat${randomBytes(3).toString('hex')}:`;
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

const bridge = startBridge(loadConfig({ DATABASE_URL: url, REDIS_URL: redisUrl, UNREAD_KEY_PREFIX: prefix, LOG_LEVEL: 'silent' }), log);
const server = await startSocketServer(
  loadSocketConfig({ PORT: '0', REDIS_URL: redisUrl, UNREAD_KEY_PREFIX: prefix, SUPABASE_JWT_SECRET: secret, LOG_LEVEL: 'silent' }),
  log,
);

type Pending = Array<[expected: number, committedAt: number]>;
const pendingTotal = new Map<string, Pending>();
const pendingRoom = new Map<string, Pending>();
const totalLat: number[] = [];
const roomLat: number[] = [];
const clients: UnreadBadgesClient[] = [];
const seenTotal = new Map<string, number>();
const seenRoom = new Map<string, number>();

function settle(list: Pending, value: number, out: number[], now: number): void {
  while (list.length > 0 && (list[0] as [number, number])[0] <= value) out.push(Math.max(0, now - (list.shift() as [number, number])[1]));
}

await Promise.all(
  users.map(async (u) => {
    pendingTotal.set(u, []);
    pendingRoom.set(u, []);
    const room = roomOf.get(u) as string;
    const client = connectUnreadBadges({
      url: server.url,
      transports: ['websocket'],
      getToken: () => mintToken(secret, u, { expiresInSeconds: 3600 }),
    });
    clients.push(client);
    await new Promise<void>((resolve) => {
      const off = client.subscribe((s) => {
        if (s.ready) resolve();
      });
      void off;
    });
    client.subscribe((s) => {
      const now = performance.now();
      seenTotal.set(u, s.total);
      seenRoom.set(u, s.rooms[room] ?? 0);
      settle(pendingTotal.get(u) as Pending, s.total, totalLat, now);
      settle(pendingRoom.get(u) as Pending, s.rooms[room] ?? 0, roomLat, now);
    });
  }),
);

const expectedOf = new Map<string, number>(users.map((u) => [u, 0]));
const total = rate * seconds;
const start = performance.now();
const inflight: Promise<void>[] = [];
for (let i = 0; i < total; i++) {
  const due = start + (i * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  const u = users[Math.floor(Math.random() * users.length)] as string;
  const expected = (expectedOf.get(u) ?? 0) + 1;
  expectedOf.set(u, expected);
  inflight.push(
    sql`update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = ${roomOf.get(u) as string}`.then(() => {
      const now = performance.now();
      // The state can beat the commit acknowledgement back to this process: that counts as 0 ms.
      for (const [seen, list, out] of [
        [seenTotal, pendingTotal, totalLat],
        [seenRoom, pendingRoom, roomLat],
      ] as const) {
        if ((seen.get(u) ?? 0) >= expected) out.push(0);
        else {
          const l = list.get(u) as Pending;
          l.push([expected, now]);
          l.sort((a, b) => a[0] - b[0]);
        }
      }
    }),
  );
}
await Promise.all(inflight);
const achieved = total / ((performance.now() - start) / 1000);
const deadline = Date.now() + 15_000;
const open = () => [...pendingTotal.values(), ...pendingRoom.values()].reduce((a, l) => a + l.length, 0);
while (open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));

const stats = (xs: number[]) => {
  xs.sort((a, b) => a - b);
  const q = (p: number) => Number((xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN).toFixed(1));
  return { samples: xs.length, p50ms: q(0.5), p90ms: q(0.9), p99ms: q(0.99), maxms: Number((xs.at(-1) ?? NaN).toFixed(1)) };
};
console.log(
  JSON.stringify({
    writesPerSecondTarget: rate,
    writesPerSecondAchieved: Math.round(achieved),
    seconds,
    users: userCount,
    notDelivered: open(),
    total: stats(totalLat),
    room: stats(roomLat),
  }),
);

for (const c of clients) c.close();
await server.close();
await bridge.stop();
await sql.end();
await adminSql.unsafe(`drop database ${name} with (force)`);
await adminSql.end();
process.exit(0);
