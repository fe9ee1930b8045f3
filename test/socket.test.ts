import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { deletePrefix, testConfig, testLogger, truth, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { connectClient, refusal, socketConfig, startTestSocketServer, sum, testSecret, token, until } from './support/socket.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { mintToken } from '../src/socket/auth.js';
import { SeedCompatChatSocket, RoomNotFoundError } from '../src/compat/seed-compat.js';
import type { RunningSocketServer } from '../src/socket/server.js';
import type { UnreadCountsReply, ErrorReply } from '../src/socket/badges.js';
import { InvalidIdError } from '../src/ids.js';

const { db, r } = useEnv();
let bridge: RunningBridge;
let server: RunningSocketServer;
const secret = testSecret();
const log = testLogger();

async function room(userId: string | null, companyId: string | null, userCount = 0, companyCount = 0, active = true): Promise<string> {
  const id = uuid();
  await db.sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
               values (${id}, ${userId}, ${companyId}, ${userCount}, ${companyCount}, ${active})`;
  return id;
}

const truthTotal = async (userId: string) => sum((await truth(db.sql))[userId]);

beforeAll(async () => {
  bridge = startBridge(testConfig(db, r), log);
  server = await startTestSocketServer(socketConfig(r, secret), log);
});

afterAll(async () => {
  await server?.close();
  await bridge?.stop();
});

describe('auth', () => {
  it('refuses a connection without a token', async () => {
    expect(await refusal(server.url, {})).toMatch(/missing token/);
  });

  it('refuses an expired token', async () => {
    expect(await refusal(server.url, { token: await token(secret, uuid(), -60) })).toMatch(/expired/);
  });

  it('refuses a token signed with another secret', async () => {
    expect(await refusal(server.url, { token: await token(testSecret(), uuid()) })).toMatch(/signature/);
  });

  it('refuses garbage and tokens whose sub is not a user id', async () => {
    expect(await refusal(server.url, { token: 'not-a-jwt' })).toMatch(/malformed/);
    const { SignJWT } = await import('jose');
    const bad = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('../../etc')
      .setAudience('authenticated')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(secret));
    expect(await refusal(server.url, { token: bad })).toMatch(/sub must be a UUID/);
    const anon = await new SignJWT({ role: 'anon' })
      .setProtectedHeader({ alg: 'HS256' })
      .setAudience('authenticated')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(secret));
    expect(await refusal(server.url, { token: anon })).toMatch(/sub/);
  });

  it('accepts an Authorization: Bearer header', async () => {
    const a = uuid();
    const c = await connectClient(server.url, { header: `Bearer ${await token(secret, a)}` }, a);
    await until(() => c.events.length > 0, 10_000, 'first total');
    expect(c.last()).toMatchObject({ userId: a, totalUnreadCount: 0, unreadRooms: 0 });
    c.close();
  });

  it("refuses a request naming another user's counts", async () => {
    const a = uuid();
    const b = uuid();
    await room(b, null, 7);
    const c = await connectClient(server.url, { token: await token(secret, a) }, a);
    const reply = (await c.socket.emitWithAck('get-unread-counts', { userId: b })) as ErrorReply;
    expect(reply.error).toMatch(/forbidden/);
    expect(((await c.socket.emitWithAck('get-unread-counts', b)) as ErrorReply).error).toMatch(/forbidden/);
    expect(((await c.socket.emitWithAck('get-unread-counts', { user_id: b })) as ErrorReply).error).toMatch(/forbidden/);
    expect(((await c.socket.emitWithAck('get-unread-counts', { userId: 'garbage' })) as ErrorReply).error).toMatch(/forbidden/);
    const own = (await c.socket.emitWithAck('get-unread-counts', { userId: a.toUpperCase() })) as UnreadCountsReply;
    expect(own).toMatchObject({ userId: a, totalUnreadCount: 0 });
    // B's later changes never reach A.
    await db.sql`update public.chat_rooms set user_unread_count = 9 where user_id = ${b}`;
    await waitForBridge(db.sql);
    await new Promise((res) => setTimeout(res, 200));
    expect(c.events.every((e) => e.userId === a && e.totalUnreadCount === 0)).toBe(true);
    c.close();
  });
});

describe('badges', () => {
  it('sends the correct total on connect and follows updates', async () => {
    const a = uuid();
    const other = uuid();
    const r1 = await room(a, other, 3, 5);
    await room(other, a, 1, 4);
    await room(a, null, 2, 0, false); // inactive: not counted
    const c = await connectClient(server.url, { token: await token(secret, a) }, a);
    await until(() => c.events.length > 0, 10_000, 'first total');
    expect(c.last()).toMatchObject({ totalUnreadCount: 7, unreadRooms: 2 });
    expect(await truthTotal(a)).toBe(7);

    await db.sql`update public.chat_rooms set user_unread_count = 10 where id = ${r1}`;
    await until(async () => c.last()?.totalUnreadCount === (await truthTotal(a)), 10_000, 'updated total');
    expect(c.last()?.totalUnreadCount).toBe(14);

    const reply = (await c.socket.emitWithAck('get-unread-counts')) as UnreadCountsReply;
    expect(reply.totalUnreadCount).toBe(14);
    expect(reply.rooms).toEqual((await truth(db.sql))[a]);
    expect(reply.seq).toBeGreaterThanOrEqual(c.last()?.seq ?? 0);
    c.close();
  });

  it('coalesces a burst of 100 updates, in seq order, ending at the truth', async () => {
    const a = uuid();
    const rooms = [await room(a, null), await room(null, a), await room(a, uuid())];
    const c = await connectClient(server.url, { token: await token(secret, a) }, a);
    const c2 = await connectClient(server.url, { token: await token(secret, a) }, a);
    await until(() => c.events.length > 0 && c2.events.length > 0, 10_000, 'first total');
    const before = c.events.length;
    // 100 commits at once (over the pool), so the burst lands within a few ms even on a busy machine.
    await Promise.all(
      Array.from({ length: 100 }, (_, i) => {
        const id = rooms[i % 3] as string;
        return db.sql`update public.chat_rooms set
          user_unread_count = case when user_id = ${a} then user_unread_count + 1 else user_unread_count end,
          company_unread_count = case when user_id is distinct from ${a} then company_unread_count + 1 else company_unread_count end
          where id = ${id}`;
      }),
    );
    await waitForBridge(db.sql);
    const expected = await truthTotal(a);
    expect(expected).toBe(100);
    await until(() => c.last()?.totalUnreadCount === expected && c2.last()?.totalUnreadCount === expected, 10_000, 'final total');
    await new Promise((res) => setTimeout(res, 300)); // nothing may follow the final value
    for (const client of [c, c2]) {
      const seqs = client.events.map((e) => e.seq);
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number);
      expect(client.last()?.totalUnreadCount).toBe(expected);
    }
    const burstEmits = c.events.length - before;
    console.log(`burst of 100 updates -> ${burstEmits} emits`);
    expect(burstEmits).toBeLessThan(40);
    c.close();
    c2.close();
  });

  it('recovers correct totals after the Redis keys are wiped while connected', async () => {
    const a = uuid();
    const r1 = await room(a, null, 4);
    const c = await connectClient(server.url, { token: await token(secret, a) }, a);
    await until(() => c.last()?.totalUnreadCount === 4, 10_000, 'first total');
    await deletePrefix(r.redis, r.prefix); // data loss: no reset is published
    await db.sql`update public.chat_rooms set user_unread_count = 6 where id = ${r1}`;
    await until(() => c.last()?.totalUnreadCount === 6, 10_000, 'total after wipe');
    expect(await truthTotal(a)).toBe(6);
    // And changes keep flowing afterwards.
    await db.sql`update public.chat_rooms set user_unread_count = 1 where id = ${r1}`;
    await until(() => c.last()?.totalUnreadCount === 1, 10_000, 'total after recovery');
    const seqs = c.events.map((e) => e.seq);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number);
    c.close();
  });

  it('re-reads connected users when a reset is published (TRUNCATE)', async () => {
    const a = uuid();
    await room(a, null, 2);
    const c = await connectClient(server.url, { token: await token(secret, a) }, a);
    await until(() => c.last()?.totalUnreadCount === 2, 10_000, 'first total');
    await db.sql`truncate public.chat_rooms`;
    await until(() => c.last()?.totalUnreadCount === 0, 10_000, 'total after truncate');
    c.close();
  });

  it('resubscribes and pushes fresh totals after its Redis connections drop', async () => {
    // A server with the reconcile loop off, so only the reconnect path can deliver.
    const name = `socktest${uuid().slice(0, 8)}`;
    const redis = new Redis(r.url, { connectionName: name, enableAutoPipelining: true, maxRetriesPerRequest: 3 });
    redis.on('error', () => {});
    const s2 = await startTestSocketServer(socketConfig(r, secret, { UNREAD_SOCKET_RECONCILE_MS: '0' }), log, { redis });
    try {
      const a = uuid();
      const r1 = await room(a, null, 3);
      const c = await connectClient(s2.url, { token: await token(secret, a) }, a);
      await until(() => c.last()?.totalUnreadCount === 3, 10_000, 'first total');
      await deletePrefix(r.redis, r.prefix);
      await db.sql`update public.chat_rooms set user_unread_count = 8 where id = ${r1}`;
      await waitForBridge(db.sql);
      const list = (await r.redis.client('LIST')) as string;
      const ids = list
        .split('\n')
        .filter((l) => l.includes(` name=${name} `))
        .map((l) => /id=(\d+)/.exec(l)?.[1])
        .filter((x): x is string => Boolean(x));
      expect(ids.length).toBeGreaterThanOrEqual(2);
      for (const id of ids) await r.redis.client('KILL', 'ID', id);
      await until(() => c.last()?.totalUnreadCount === 8, 15_000, 'total after reconnect');
      await db.sql`update public.chat_rooms set user_unread_count = 2 where id = ${r1}`;
      await until(() => c.last()?.totalUnreadCount === 2, 10_000, 'change after resubscribe');
      c.close();
    } finally {
      await s2.close();
      redis.disconnect();
    }
  });
});

describe('seed compatibility adapter', () => {
  it('writes counts to the database and badges follow through the bridge', async () => {
    const chat = new SeedCompatChatSocket(db.sql, server.badges, { throwOnError: true });
    const user = uuid();
    const company = uuid();
    const r1 = await room(user, company, 0, 0);
    const cu = await connectClient(server.url, { token: await token(secret, user) }, user);
    const cc = await connectClient(server.url, { token: await token(secret, company) }, company);
    const roomEvents: unknown[] = [];
    cu.socket.on('chat-room-updated', (m: unknown) => roomEvents.push(m));
    await until(() => cu.events.length > 0 && cc.events.length > 0, 10_000, 'first totals');

    expect(await chat.notifyRoomUpdate(company, user, r1, { message: 'hi' })).toMatchObject({ ok: true, unread: 1 });
    expect(await chat.notifyRoomUpdate(company, user, r1, { message: 'again' })).toMatchObject({ ok: true, unread: 2 });
    expect(await chat.notifyRoomUpdate(user, company, r1, { message: 'reply' })).toMatchObject({ ok: true, unread: 1 });
    const [row] = await db.sql<{ u: number; c: number }[]>`
      select user_unread_count as u, company_unread_count as c from public.chat_rooms where id = ${r1}`;
    expect(row).toEqual({ u: 2, c: 1 });
    await until(() => cu.last()?.totalUnreadCount === 2 && cc.last()?.totalUnreadCount === 1, 10_000, 'badges after send');
    await until(() => roomEvents.length === 2, 5_000, 'chat-room-updated');
    expect(roomEvents[0]).toEqual({ message: 'hi' });

    expect(await chat.resetUnreadCountOnJoin(user, r1)).toMatchObject({ ok: true, unread: 0 });
    await until(() => cu.last()?.totalUnreadCount === 0, 10_000, 'badge after join');
    expect(cc.last()?.totalUnreadCount).toBe(1);

    const totals = await chat.sendTotalUnreadCount(company);
    expect(totals).toMatchObject({ total: 1, unreadRooms: 1 });

    await expect(chat.notifyRoomUpdate(company, "x' or 1=1 --", r1, {})).rejects.toBeInstanceOf(InvalidIdError);
    await expect(chat.resetUnreadCountOnJoin(uuid(), r1)).rejects.toBeInstanceOf(RoomNotFoundError);
    // Seed behaviour by default: errors are logged and reported, never thrown.
    const lenient = new SeedCompatChatSocket(db.sql, server.badges);
    expect(await lenient.notifyRoomUpdate(company, uuid(), r1, {})).toMatchObject({ ok: false });
    cu.close();
    cc.close();
  });

  it('a user on both sides of a room is counted on the user side', async () => {
    const chat = new SeedCompatChatSocket(db.sql, server.badges, { throwOnError: true });
    const a = uuid();
    const r1 = await room(a, a, 0, 0);
    expect(await chat.notifyRoomUpdate(uuid(), a, r1, {})).toMatchObject({ ok: true, unread: 1 });
    const [row] = await db.sql<{ u: number; c: number }[]>`
      select user_unread_count as u, company_unread_count as c from public.chat_rooms where id = ${r1}`;
    expect(row).toEqual({ u: 1, c: 0 });
  });
});

describe('token expiry while connected', () => {
  it('disconnects the socket when its token expires', async () => {
    const a = uuid();
    const c = await connectClient(server.url, { token: await mintToken(secret, a, { expiresInSeconds: 2 }) }, a);
    const expired = new Promise<string>((res) => c.socket.on('disconnect', (reason) => res(reason)));
    expect(await expired).toBe('io server disconnect');
  });
});
