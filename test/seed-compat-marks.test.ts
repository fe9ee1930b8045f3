import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testLogger, truth, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { connectClient, socketConfig, testSecret, token, until } from './support/socket.js';
import { startBridge, startServe, type RunningBridge, type RunningServe } from '../src/launch.js';
import { SeedCompatChatSocket, RoomNotFoundError, InvalidInputError } from '../src/compat/seed-compat.js';
import { seedDemo, DEMO_ROOMS, DEMO_USERS } from '../src/demo/demo.js';
import type { RoomsUpdatedPayload } from '../src/socket/badges.js';

const { db, r } = useEnv();
let bridge: RunningBridge;
let server: RunningServe;
let chat: SeedCompatChatSocket;
const secret = testSecret();
const log = testLogger();

async function room(userId: string | null, companyId: string | null, userCount = 0, companyCount = 0): Promise<string> {
  const id = uuid();
  await db.sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
               values (${id}, ${userId}, ${companyId}, ${userCount}, ${companyCount}, true)`;
  return id;
}

const rowOf = async (id: string) =>
  (
    await db.sql<{ user_unread_count: number; company_unread_count: number }[]>`
    select user_unread_count, company_unread_count from public.chat_rooms where id = ${id}`
  )[0];
const logRows = async () => Number((await db.sql<{ n: string }[]>`select count(*)::text as n from unread_sync.changes`)[0]?.n);

beforeAll(async () => {
  bridge = startBridge(testConfig(db, r), log);
  // startServe wires the demo routes (UNREAD_DEMO) the way `unread-sync serve` does.
  server = await startServe(socketConfig(r, secret, { UNREAD_DEMO: 'true', DATABASE_URL: db.url }), log);
  chat = new SeedCompatChatSocket(db.sql, server.badges);
});

afterAll(async () => {
  await server?.close();
  await bridge?.stop();
});

describe('markRoomRead / markRoomUnread / markAllRead', () => {
  it('writes the matching side and the badge follows through the triggers to the socket', async () => {
    const a = uuid();
    const other = uuid();
    const mine = await room(a, other, 0, 5); // a is the user side
    const theirs = await room(other, a, 7, 0); // a is the company side
    const c = await connectClient(server.url, { token: await token(secret, a) }, a);
    const roomsEvents: RoomsUpdatedPayload[] = [];
    c.socket.on('unread-rooms-updated', (p: RoomsUpdatedPayload) => roomsEvents.push(p));
    await until(() => roomsEvents.length > 0, 10_000, 'first rooms event');

    expect(await chat.markRoomUnread(a, mine)).toEqual({ ok: true, roomId: mine, userId: a, unread: 1 });
    expect(await rowOf(mine)).toEqual({ user_unread_count: 1, company_unread_count: 5 });
    expect(await chat.markRoomUnread(a, theirs, 3)).toMatchObject({ ok: true, unread: 3 });
    expect(await rowOf(theirs)).toEqual({ user_unread_count: 7, company_unread_count: 3 });
    await until(() => c.last()?.totalUnreadCount === 4, 10_000, 'badge 4 after mark unread');
    await until(() => roomsEvents.at(-1)?.seq === c.last()?.seq, 10_000, 'rooms event for the same seq');
    expect(roomsEvents.some((e) => e.rooms[theirs] === 3)).toBe(true);

    expect(await chat.markRoomRead(a, theirs)).toMatchObject({ ok: true, unread: 0 });
    expect(await rowOf(theirs)).toEqual({ user_unread_count: 7, company_unread_count: 0 });
    await until(() => c.last()?.totalUnreadCount === 1, 10_000, 'badge 1 after mark read');

    await chat.markRoomUnread(a, theirs, 2);
    const all = await chat.markAllRead(a);
    expect(all).toEqual({ ok: true, userId: a, rooms: 2 });
    expect(await rowOf(mine)).toEqual({ user_unread_count: 0, company_unread_count: 5 });
    expect(await rowOf(theirs)).toEqual({ user_unread_count: 7, company_unread_count: 0 });
    await until(() => c.last()?.totalUnreadCount === 0, 10_000, 'badge 0 after mark all read');
    await waitForBridge(db.sql);
    const t = await truth(db.sql);
    expect(t[a]).toBeUndefined();
    expect(t[other]).toEqual({ [mine]: 5, [theirs]: 7 });
    expect(await chat.markAllRead(a)).toEqual({ ok: true, userId: a, rooms: 0 });
    c.close();
  });

  it('counts a room whose user is also its company once, on the user side', async () => {
    const a = uuid();
    const self = await room(a, a, 0, 0);
    await chat.markRoomUnread(a, self, 4);
    expect(await rowOf(self)).toEqual({ user_unread_count: 4, company_unread_count: 0 });
    await waitForBridge(db.sql);
    expect((await truth(db.sql))[a]).toEqual({ [self]: 4 });
    await chat.markRoomRead(a, self);
    expect(await rowOf(self)).toEqual({ user_unread_count: 0, company_unread_count: 0 });
  });

  it('refuses a room the user is not part of, and bad input, writing nothing', async () => {
    const a = uuid();
    const stranger = uuid();
    const id = await room(a, uuid(), 2, 3);
    const logBefore = await logRows();
    for (const result of [
      await chat.markRoomRead(stranger, id),
      await chat.markRoomUnread(stranger, id, 5),
      await chat.markRoomUnread(a, uuid()), // no such room
    ]) {
      expect(result.ok).toBe(false);
      expect(!result.ok && result.error).toMatch(/does not exist or .* is not one of its members/);
    }
    const bad: Array<[string, () => Promise<{ ok: boolean }>, RegExp]> = [
      ['user id', () => chat.markRoomRead("x' or 1=1 --", id), /user id must be a UUID/],
      ['empty room id', () => chat.markRoomRead(a, ''), /room id must be a non-empty string/],
      ['control characters', () => chat.markRoomRead(a, 'a\u0000b'), /room id must be/],
      ['room id not a uuid for a uuid column', () => chat.markRoomRead(a, '1; drop table chat_rooms'), /is not a valid chat_rooms id/],
      ['count 0', () => chat.markRoomUnread(a, id, 0), /count must be an integer from 1/],
      ['count negative', () => chat.markRoomUnread(a, id, -3), /count must be an integer/],
      ['count fraction', () => chat.markRoomUnread(a, id, 1.5), /count must be an integer/],
      ['count too large', () => chat.markRoomUnread(a, id, 2 ** 31), /count must be an integer from 1 to 1000000/],
      ['markAllRead user id', () => chat.markAllRead('nope'), /user id must be a UUID/],
    ];
    for (const [what, run, message] of bad) {
      const result = (await run()) as { ok: boolean; error?: string };
      expect(result.ok, what).toBe(false);
      expect(result.error, what).toMatch(message);
    }
    expect(await rowOf(id)).toEqual({ user_unread_count: 2, company_unread_count: 3 });
    expect(await logRows()).toBe(logBefore);
    // With throwOnError the same refusals reject with typed errors.
    const strict = new SeedCompatChatSocket(db.sql, server.badges, { throwOnError: true });
    await expect(strict.markRoomRead(stranger, id)).rejects.toBeInstanceOf(RoomNotFoundError);
    await expect(strict.markRoomUnread(a, id, 0)).rejects.toBeInstanceOf(InvalidInputError);
  });
});

describe('demo endpoints', () => {
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it('mark-unread, mark-read, read-all and rooms drive chat_rooms through the adapter', async () => {
    await seedDemo(db.sql);
    const alice = DEMO_USERS[0]?.id as string;
    const [r1, r2] = DEMO_ROOMS.filter((x) => x.userId === alice).map((x) => x.id) as [string, string];
    const rooms = await fetch(`${server.url}/demo/rooms?userId=${alice}`);
    expect(await rooms.json()).toEqual({
      ok: true,
      rooms: [
        { id: r1, title: 'Acme Corp' },
        { id: r2, title: 'Globex' },
      ],
    });

    expect(await post('/demo/mark-unread', { userId: alice, roomId: r1, count: 3 })).toMatchObject({
      status: 200,
      body: { ok: true, unread: 3 },
    });
    expect(await post('/demo/mark-unread', { userId: alice, roomId: r2 })).toMatchObject({ status: 200, body: { ok: true, unread: 1 } });
    expect(await rowOf(r1)).toMatchObject({ user_unread_count: 3 });
    expect(await post('/demo/mark-read', { userId: alice, roomId: r1 })).toMatchObject({ status: 200, body: { ok: true } });
    expect(await rowOf(r1)).toMatchObject({ user_unread_count: 0 });
    expect(await post('/demo/read-all', { userId: alice })).toMatchObject({ status: 200, body: { ok: true, rooms: 1 } });
    expect(await rowOf(r2)).toMatchObject({ user_unread_count: 0 });

    // Refusals: another user's room, bad bodies, non-demo users.
    const bobRoom = DEMO_ROOMS.find((x) => x.userId === DEMO_USERS[1]?.id)?.id as string;
    expect((await post('/demo/mark-unread', { userId: alice, roomId: bobRoom })).status).toBe(404);
    expect((await post('/demo/mark-unread', { userId: alice, roomId: r1, count: 0 })).status).toBe(400);
    expect((await post('/demo/mark-read', { userId: 'x', roomId: r1 })).status).toBe(400);
    expect((await post('/demo/read-all', { userId: uuid() })).status).toBe(403);
    expect((await fetch(`${server.url}/demo/rooms?userId=${uuid()}`)).status).toBe(403);
    expect((await fetch(`${server.url}/demo/rooms?userId=bad`)).status).toBe(400);
  });
});
