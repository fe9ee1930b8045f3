import postgres from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testConfig, testLogger, truth, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';
import {
  connectClient,
  spawnSocketServer,
  sum,
  testSecret,
  token,
  until,
  type BadgeClient,
  type SocketServerProcess,
} from './support/socket.js';
import { startBridge, type RunningBridge } from '../src/launch.js';

const USERS = 250;
const CLIENTS = 1_000;
const ROOMS = 600;
const WRITERS = 4;
const WRITES_PER_WRITER = 400;

const { db, r } = useEnv();
let bridge: RunningBridge;
const servers: SocketServerProcess[] = [];
const clients: BadgeClient[] = [];
const secret = testSecret();
const log = testLogger();

beforeAll(async () => {
  bridge = startBridge(testConfig(db, r), log);
  // Two socket servers in child processes; reconcile loop off: every change must arrive through
  // sharded pub/sub alone.
  const env = {
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: r.url,
    UNREAD_KEY_PREFIX: r.prefix,
    SUPABASE_JWT_SECRET: secret,
    UNREAD_SOCKET_RECONCILE_MS: '0',
    UNREAD_DEMO: 'false',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  };
  servers.push(...(await Promise.all([spawnSocketServer(env), spawnSocketServer(env)])));
});

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(servers.map((s) => s.stop()));
  await bridge?.stop();
});

// Deterministic pseudo-random numbers so a failure can be replayed.
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

it('1,000 clients on two servers all end at the database truth and only see their own user', async () => {
  const rand = rng(42);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const users = Array.from({ length: USERS }, () => uuid());
  const rooms: string[] = [];
  const rows = Array.from({ length: ROOMS }, () => {
    const id = uuid();
    rooms.push(id);
    const u = pick(users);
    let c = pick(users);
    if (rand() < 0.05) c = u; // both sides the same user
    return {
      id,
      user_id: u,
      company_id: rand() < 0.1 ? null : c,
      user_unread_count: Math.floor(rand() * 4),
      company_unread_count: Math.floor(rand() * 4),
      is_active: rand() > 0.1,
    };
  });
  await db.sql`insert into public.chat_rooms ${db.sql(rows)}`;

  const tokens = new Map<string, string>();
  for (const u of users) tokens.set(u, await token(secret, u, 600));
  const started = Date.now();
  for (let i = 0; i < CLIENTS; i += 100) {
    const batch = Array.from({ length: Math.min(100, CLIENTS - i) }, (_, j) => {
      const n = i + j;
      const user = users[n % USERS] as string;
      // Each user has clients on both servers: fan-out must reach every one of them.
      const server = servers[Math.floor(n / USERS) % 2] as SocketServerProcess;
      return connectClient(server.url, { token: tokens.get(user) as string }, user, 20_000);
    });
    clients.push(...(await Promise.all(batch)));
  }
  console.log(`connected ${clients.length} clients in ${Date.now() - started} ms`);
  await until(() => clients.every((c) => c.events.length > 0), 30_000, 'every client got a first total');

  // Random writes from several connections at once.
  const writeStart = Date.now();
  await Promise.all(
    Array.from({ length: WRITERS }, async (_, w) => {
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      const wr = rng(1000 + w);
      const choose = <T>(xs: T[]): T => xs[Math.floor(wr() * xs.length)] as T;
      try {
        for (let k = 0; k < WRITES_PER_WRITER; k++) {
          const room = choose(rooms);
          const op = wr();
          if (op < 0.5) {
            await sql`update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = ${room}`;
          } else if (op < 0.8) {
            await sql`update public.chat_rooms set company_unread_count = ${Math.floor(wr() * 6)} where id = ${room}`;
          } else if (op < 0.9) {
            await sql`update public.chat_rooms set user_unread_count = 0 where id = ${room}`;
          } else if (op < 0.97) {
            await sql`update public.chat_rooms set is_active = not is_active where id = ${room}`;
          } else {
            // Re-assign a side: the room moves between two users' badges.
            await sql`update public.chat_rooms set company_id = ${choose(users)} where id = ${room}`;
          }
        }
      } finally {
        await sql.end({ timeout: 5 });
      }
    }),
  );
  console.log(`${WRITERS * WRITES_PER_WRITER} writes in ${Date.now() - writeStart} ms`);
  await waitForBridge(db.sql);
  const t = await truth(db.sql);

  await until(() => clients.every((c) => c.last()?.totalUnreadCount === sum(t[c.userId])), 20_000, 'quiescence');

  for (const c of clients) {
    expect(c.last()?.totalUnreadCount).toBe(sum(t[c.userId]));
    expect(c.last()?.unreadRooms).toBe(Object.keys(t[c.userId] ?? {}).length);
    expect(c.events.every((e) => e.userId === c.userId)).toBe(true);
    const seqs = c.events.map((e) => e.seq);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number);
  }
  const events = clients.reduce((a, c) => a + c.events.length, 0);
  const health = await Promise.all(servers.map(async (s) => (await (await fetch(`${s.url}/healthz`)).json()) as { users: number }));
  console.log(`${events} badge events delivered; users per server: ${health.map((h) => h.users).join(', ')}`);
  for (const h of health) expect(h.users).toBe(USERS);
  // Last socket of a user gone -> that server unsubscribes.
  for (const c of clients) c.close();
  const usersOn = async (s: SocketServerProcess) => ((await (await fetch(`${s.url}/healthz`)).json()) as { users: number }).users;
  await until(async () => (await Promise.all(servers.map(usersOn))).every((n) => n === 0), 10_000, 'unsubscribe');
  const channels = (await r.redis.call('PUBSUB', 'SHARDCHANNELS', `${r.prefix}c:*`)) as string[];
  expect(channels).toEqual([]);
});
