import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectUnreadBadges, type UnreadBadgesClient, type UnreadState } from '../src/client/index.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import type { RunningSocketServer } from '../src/socket/server.js';
import { testConfig, testLogger, truth, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { socketConfig, startTestSocketServer, testSecret, token, until } from './support/socket.js';

/**
 * The client library against a real bridge and socket server: state equal to Redis and to the
 * database, live per-room counts, resync after the server drops it, token refresh without a gap,
 * and a property run of random chat_rooms writes with forced reconnects.
 */

const { db, r } = useEnv();
let bridge: RunningBridge;
let server: RunningSocketServer;
const secret = testSecret();
const log = testLogger();
const clients: UnreadBadgesClient[] = [];

beforeAll(async () => {
  bridge = startBridge(testConfig(db, r), log);
  server = await startTestSocketServer(socketConfig(r, secret), log);
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.close();
  await bridge?.stop();
});

async function room(userId: string | null, companyId: string | null, userCount = 0, companyCount = 0): Promise<string> {
  const id = uuid();
  await db.sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
               values (${id}, ${userId}, ${companyId}, ${userCount}, ${companyCount}, true)`;
  return id;
}

interface Recorded {
  client: UnreadBadgesClient;
  states: UnreadState[];
  errors: Error[];
  tokens: number;
}

function connect(
  userId: string,
  opts: { lifetimeS?: number; refreshBeforeExpiryMs?: number; getToken?: () => Promise<string> } = {},
): Recorded {
  const rec: Recorded = { client: undefined as unknown as UnreadBadgesClient, states: [], errors: [], tokens: 0 };
  rec.client = connectUnreadBadges({
    url: server.url,
    transports: ['websocket'],
    getToken:
      opts.getToken ??
      (() => {
        rec.tokens++;
        return token(secret, userId, opts.lifetimeS ?? 300);
      }),
    refreshBeforeExpiryMs: opts.refreshBeforeExpiryMs,
    onError: (err) => rec.errors.push(err),
  });
  rec.client.subscribe((s) => rec.states.push(s));
  clients.push(rec.client);
  return rec;
}

/** The client's state equals Redis (through the reader) and the database truth. */
async function matches(userId: string, s: UnreadState): Promise<boolean> {
  const expected = (await truth(db.sql))[userId] ?? {};
  const redis = await server.badges.reader.getCounts(userId);
  const total = Object.values(expected).reduce((a, b) => a + b, 0);
  return (
    s.ready &&
    s.total === total &&
    s.unreadRooms === Object.keys(expected).length &&
    JSON.stringify(Object.entries(s.rooms).sort()) === JSON.stringify(Object.entries(expected).sort()) &&
    JSON.stringify(Object.entries(redis.rooms).sort()) === JSON.stringify(Object.entries(expected).sort()) &&
    s.seq === redis.seq
  );
}

/** Seqs only grow and the total shown at a seq is never replaced by an older one. */
function assertMonotonic(states: UnreadState[]): void {
  for (let i = 1; i < states.length; i++) expect((states[i] as UnreadState).seq).toBeGreaterThanOrEqual((states[i - 1] as UnreadState).seq);
}

describe('connectUnreadBadges', () => {
  it('starts with an empty, not-ready state, then the full state; follows per-room changes live', async () => {
    const a = uuid();
    const r1 = await room(a, uuid(), 3, 1);
    const r2 = await room(uuid(), a, 0, 2);
    const rec = connect(a);
    expect(rec.states[0]).toEqual({ total: 0, unreadRooms: 0, rooms: {}, seq: 0, ready: false });
    await until(() => matches(a, rec.client.getState()), 15_000, 'initial state');
    expect(rec.client.getState().rooms).toEqual({ [r1]: 3, [r2]: 2 });

    await db.sql`update public.chat_rooms set user_unread_count = 0 where id = ${r1}`;
    await until(() => rec.client.getState().rooms[r1] === undefined, 15_000, 'room 1 read');
    await db.sql`update public.chat_rooms set company_unread_count = company_unread_count + 5 where id = ${r2}`;
    await until(() => rec.client.getState().rooms[r2] === 7, 15_000, 'room 2 at 7');
    await until(() => matches(a, rec.client.getState()), 15_000, 'state after changes');
    expect(rec.client.getState()).toMatchObject({ total: 7, unreadRooms: 1 });
    assertMonotonic(rec.states);
    // Unsubscribe works: no more calls after it.
    const seen: UnreadState[] = [];
    const off = rec.client.subscribe((s) => seen.push(s));
    off();
    await db.sql`update public.chat_rooms set company_unread_count = 1 where id = ${r2}`;
    await until(() => rec.client.getState().rooms[r2] === 1, 15_000, 'room 2 at 1');
    expect(seen).toHaveLength(1);
    rec.client.close();
  });

  it('keeps showing the last state while the server drops it, then resyncs', async () => {
    const a = uuid();
    const r1 = await room(a, null, 2);
    const rec = connect(a);
    await until(() => matches(a, rec.client.getState()), 15_000, 'initial state');
    const before = rec.client.getState();
    // The server disconnects every socket (as on shutdown or token expiry): Socket.IO itself would not come back.
    server.io.disconnectSockets(true);
    await until(() => !rec.client.getState().ready, 5_000, 'not ready');
    expect(rec.client.getState()).toMatchObject({ total: before.total, rooms: before.rooms, seq: before.seq });
    await db.sql`update public.chat_rooms set user_unread_count = 9 where id = ${r1}`;
    await until(() => matches(a, rec.client.getState()), 15_000, 'resynced state');
    expect(rec.client.getState().rooms[r1]).toBe(9);
    assertMonotonic(rec.states);
    // Never blank: every state after the first full one shows a real total.
    expect(rec.states.filter((s) => s.seq > 0).every((s) => s.total > 0)).toBe(true);
    rec.client.close();
  });

  it('refreshes the token before it expires, without a visible gap', async () => {
    const a = uuid();
    const r1 = await room(a, null, 1);
    // 6 s tokens refreshed 3 s ahead: a new connection every ~3 s; the server would cut each at 6 s.
    const rec = connect(a, { lifetimeS: 6, refreshBeforeExpiryMs: 3_000 });
    await until(() => matches(a, rec.client.getState()), 15_000, 'initial state');
    const readyAt = rec.states.findIndex((s) => s.ready);
    for (let i = 2; i <= 6; i++) {
      await new Promise((res) => setTimeout(res, 1_500));
      await db.sql`update public.chat_rooms set user_unread_count = ${i} where id = ${r1}`;
      await until(() => rec.client.getState().rooms[r1] === i, 15_000, `room at ${i}`);
    }
    // 9 s of 6 s tokens: at least two refreshes, and the shown state never went not-ready.
    expect(rec.tokens).toBeGreaterThanOrEqual(3);
    expect(rec.states.slice(readyAt).every((s) => s.ready)).toBe(true);
    expect(rec.errors.filter((e) => /expired/.test(e.message))).toEqual([]);
    assertMonotonic(rec.states);
    // Old connections are closed once replaced: one socket for this user at the end.
    await until(async () => (await server.io.fetchSockets()).filter((s) => s.data.unreadUserId === a).length === 1, 10_000, 'one socket');
    rec.client.close();
  });

  it('reports a refused token and recovers once getToken returns a good one', async () => {
    const a = uuid();
    await room(a, null, 4);
    let good = false;
    const rec = connect(a, { getToken: async () => (good ? token(secret, a) : 'not-a-jwt') });
    await until(() => rec.errors.some((e) => /malformed/.test(e.message)), 10_000, 'refusal reported');
    expect(rec.client.getState().ready).toBe(false);
    good = true;
    await until(() => matches(a, rec.client.getState()), 20_000, 'state after recovery');
    rec.client.close();
  });

  it('property: random chat_rooms writes with forced reconnects end with the client equal to Redis and the database', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            room: fc.nat(4),
            side: fc.boolean(),
            op: fc.constantFrom('set', 'inc', 'deactivate', 'activate', 'drop-connections'),
            value: fc.nat(6),
          }),
          { minLength: 5, maxLength: 30 },
        ),
        async (ops) => {
          runs++;
          const a = uuid();
          const rooms = [
            await room(a, uuid(), 1, 0),
            await room(uuid(), a, 0, 2),
            await room(a, a, 3, 3),
            await room(a, null, 0, 0),
            await room(null, a, 0, 1),
          ];
          const rec = connect(a);
          const second = connect(a); // a second device of the same user
          await Promise.all(
            ops.map(async (op, i) => {
              await new Promise((res) => setTimeout(res, i * 15));
              const id = rooms[op.room] as string;
              if (op.op === 'drop-connections') {
                for (const s of await server.io.fetchSockets()) if (s.data.unreadUserId === a && Math.random() < 0.5) s.disconnect(true);
              } else if (op.op === 'set' && op.side)
                await db.sql`update public.chat_rooms set user_unread_count = ${op.value} where id = ${id}`;
              else if (op.op === 'set') await db.sql`update public.chat_rooms set company_unread_count = ${op.value} where id = ${id}`;
              else if (op.op === 'inc')
                await db.sql`update public.chat_rooms set user_unread_count = user_unread_count + 1, company_unread_count = company_unread_count + 1 where id = ${id}`;
              else await db.sql`update public.chat_rooms set is_active = ${op.op === 'activate'} where id = ${id}`;
            }),
          );
          await until(() => matches(a, rec.client.getState()), 20_000, 'client 1 equal to Redis and the database');
          await until(() => matches(a, second.client.getState()), 20_000, 'client 2 equal to Redis and the database');
          assertMonotonic(rec.states);
          assertMonotonic(second.states);
          rec.client.close();
          second.client.close();
        },
      ),
      { numRuns: 8 },
    );
    expect(runs).toBe(8);
  });
});
