/**
 * Supabase-direct mode end to end, no socket server: UPDATE chat_rooms -> trigger -> log ->
 * bridge (UNREAD_USER_TOPICS=true) -> realtime.send on the user's private topic -> stand-in
 * Realtime server -> supabase-js in connectUnreadBadgesSupabase; initial state through the RPC
 * (served by a minimal PostgREST rpc stand-in that runs it as `authenticated` with the JWT claims,
 * as PostgREST does). Real Postgres, Redis and websockets.
 */
import { createClient } from '@supabase/supabase-js';
import type { WebSocketLikeConstructor } from '@supabase/realtime-js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { jwtVerify } from 'jose';
import WebSocket from 'ws';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { migrate, MIGRATIONS_DIR } from '../src/migrate.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { connectUnreadBadgesSupabase, parseSnapshotText } from '../src/client/supabase.js';
import type { UnreadBadgesClient, UnreadState } from '../src/client/types.js';
import { prepareRealtimeDb, signTestJwt, startRealtimeServer, type RealtimeServer } from './support/realtime-server.js';
import { testConfig, testLogger, truth, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';

const JWT_SECRET = 'unread-sync-test-secret-with-at-least-32-characters';

const { db, r } = useEnv({ db: { migrate: false, prefix: 'sbdir' } });
let server: RealtimeServer;
let bridge: RunningBridge;
let anonKey: string;
const clients: UnreadBadgesClient[] = [];

async function waitFor(cond: () => boolean | Promise<boolean>, label: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${label}`);
    await new Promise((res) => setTimeout(res, 10));
  }
}

/** POST /rest/v1/rpc/<fn> the way PostgREST runs it: role from the JWT, claims in request.jwt.claims. */
async function rpcStandIn(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (req.method !== 'POST' || path !== '/rest/v1/rpc/unread_sync_my_rooms') return false;
  for await (const _ of req) void _;
  const send = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
  let claims: Record<string, unknown>;
  try {
    claims = (await jwtVerify(token, new TextEncoder().encode(JWT_SECRET))).payload;
  } catch {
    send(401, { message: 'JWT invalid' });
    return true;
  }
  const role = claims.role === 'authenticated' ? 'authenticated' : 'anon';
  try {
    const body = await db.sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
      const [row] = await tx<{ r: unknown }[]>`select public.unread_sync_my_rooms() as r`;
      return row?.r ?? null;
    });
    send(200, body);
  } catch (err) {
    send(403, { code: (err as { code?: string }).code, message: (err as Error).message });
  }
  return true;
}

async function room(userId: string, companyId: string, userCount = 0, companyCount = 0): Promise<string> {
  const id = uuid();
  await db.sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
               values (${id}, ${userId}, ${companyId}, ${userCount}, ${companyCount}, true)`;
  return id;
}

async function connectAs(userId: string, extra: { resyncIntervalMs?: number; errors?: Error[] } = {}) {
  const jwt = await signTestJwt(JWT_SECRET, { role: 'authenticated', sub: userId });
  const supabase = createClient(server.url, anonKey, {
    accessToken: async () => jwt,
    realtime: { transport: WebSocket as unknown as WebSocketLikeConstructor },
  });
  const states: UnreadState[] = [];
  const client = connectUnreadBadgesSupabase({
    supabase,
    userId,
    ...(extra.resyncIntervalMs !== undefined ? { resyncIntervalMs: extra.resyncIntervalMs } : {}),
    onError: (e) => extra.errors?.push(e),
  });
  clients.push(client);
  client.subscribe((s) => states.push(s));
  return { client, states, supabase };
}

const sorted = (m: Readonly<Record<string, number>>) => Object.entries(m).sort(([a], [b]) => a.localeCompare(b));

async function expectEqualsTruth(client: UnreadBadgesClient, userId: string): Promise<void> {
  await waitForBridge(db.sql);
  const expected = (await truth(db.sql))[userId] ?? {};
  await waitFor(() => JSON.stringify(sorted(client.getState().rooms)) === JSON.stringify(sorted(expected)), 'client equal to the database');
  const s = client.getState();
  expect(s.total).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
  expect(s.unreadRooms).toBe(Object.keys(expected).length);
  expect(s.ready).toBe(true);
}

beforeAll(async () => {
  await prepareRealtimeDb(db.url);
  server = await startRealtimeServer({ databaseUrl: db.url, jwtSecret: JWT_SECRET, httpHandler: rpcStandIn });
  anonKey = await signTestJwt(JWT_SECRET, { role: 'anon' });
  bridge = startBridge(testConfig(db, r, { UNREAD_USER_TOPICS: 'true' }), testLogger());
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await bridge?.stop();
  await server?.close();
}, 60_000);

describe('Supabase-direct mode', () => {
  it('parses pg_snapshot text like Postgres prints it', async () => {
    const [row] = await db.sql<{ s: string }[]>`select '100:110:102,105'::pg_snapshot::text as s`;
    expect(parseSnapshotText(row?.s as string)).toEqual({ xmin: 100n, xmax: 110n, xip: new Set([102n, 105n]) });
    expect(parseSnapshotText('1:2:x')).toBeNull();
  });

  it('the RPC answers only the caller’s own rooms, and nothing to anon', async () => {
    const a = uuid();
    const b = uuid();
    const ra = await room(a, b, 3, 4);
    const jwt = await signTestJwt(JWT_SECRET, { role: 'authenticated', sub: a });
    const res = await fetch(`${server.url}/rest/v1/rpc/unread_sync_my_rooms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}` },
    });
    const body = (await res.json()) as { userId: string; rooms: Record<string, number>; snapshot: string; seq: number };
    expect(body.userId).toBe(a);
    expect(body.rooms).toEqual({ [ra]: 3 });
    expect(parseSnapshotText(body.snapshot)).not.toBeNull();
    expect(body.seq).toBeGreaterThan(0);
    const anon = await fetch(`${server.url}/rest/v1/rpc/unread_sync_my_rooms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${anonKey}` },
    });
    expect(anon.status).toBe(403);
    expect(((await anon.json()) as { message: string }).message).toMatch(/permission denied/);
  });

  it('initial state from the RPC, then per-room changes from the bridge over the user topic', async () => {
    const a = uuid();
    const other = uuid();
    const r1 = await room(a, other, 2, 9);
    const r2 = await room(other, a, 1, 5);
    const sentBefore = server.stats.dbMessages;
    const { client } = await connectAs(a);
    await waitFor(() => client.getState().ready, 'ready');
    expect(client.getState()).toMatchObject({ total: 7, unreadRooms: 2, rooms: { [r1]: 2, [r2]: 5 } });
    await db.sql`update public.chat_rooms set user_unread_count = 6 where id = ${r1}`;
    await waitFor(() => client.getState().rooms[r1] === 6, 'r1 = 6 over Realtime');
    await db.sql`update public.chat_rooms set company_unread_count = 0 where id = ${r2}`;
    await waitFor(() => client.getState().rooms[r2] === undefined, 'r2 read');
    expect(client.getState()).toMatchObject({ total: 6, unreadRooms: 1 });
    // Fed by the bridge: the messages are on the user topic, not from a trigger (that one is off).
    const onTopic = await db.sql<{ n: string }[]>`
      select count(*)::text as n from realtime.messages where topic = ${`unread-sync:user:${a}`} and event = 'unread-rooms-updated'`;
    expect(Number(onTopic[0]?.n)).toBeGreaterThanOrEqual(2);
    expect(server.stats.dbMessages).toBeGreaterThan(sentBefore);
    await expectEqualsTruth(client, a);
  });

  it('duplicated and reordered deliveries never show an older total', async () => {
    const a = uuid();
    const rooms = await Promise.all(Array.from({ length: 4 }, () => room(a, uuid())));
    const { client, states } = await connectAs(a, { resyncIntervalMs: 0 });
    await waitFor(() => client.getState().ready, 'ready');
    server.faults.duplicateRate = 0.5;
    server.faults.reorderWindow = 5;
    server.faults.reorderFlushMs = 20;
    try {
      // Only increments: every later truth has a higher total, so any step back would be an older total.
      await Promise.all(
        rooms.map(async (id) => {
          for (let i = 0; i < 15; i++) {
            await db.sql`update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
            await new Promise((res) => setTimeout(res, 5)); // spread over many bridge cycles: many messages to reorder
          }
        }),
      );
      await expectEqualsTruth(client, a);
    } finally {
      server.faults.reset();
    }
    expect(client.getState().total).toBe(60);
    const totals = states.filter((s) => s.ready).map((s) => s.total);
    for (let i = 1; i < totals.length; i++) expect(totals[i]).toBeGreaterThanOrEqual(totals[i - 1] as number);
    for (const id of rooms) {
      const seen = states.map((s) => s.rooms[id] ?? 0);
      for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1] as number);
    }
    const [sent] = await db.sql<{ n: string }[]>`
      select count(*)::text as n from realtime.messages where topic = ${`unread-sync:user:${a}`}`;
    // One message per user per bridge chunk: never more messages than changes.
    expect(Number(sent?.n)).toBeGreaterThan(0);
    expect(Number(sent?.n)).toBeLessThanOrEqual(60);
    console.log(`direct mode: 60 changes -> ${sent?.n} Realtime messages on the user topic, ${states.length} client states`);
  });

  it('drops a broadcast its snapshot already contains and an older version; applies a newer one', async () => {
    const a = uuid();
    const r1 = await room(a, uuid(), 4);
    const r2 = await room(a, uuid(), 0);
    const { client, states } = await connectAs(a, { resyncIntervalMs: 0 });
    await waitFor(() => client.getState().ready, 'ready');
    const send = async (unread: number, version: string, xid: string) => {
      const payload = {
        userId: a,
        seq: Number(version),
        full: false,
        rooms: { [r1]: unread },
        versions: { [r1]: version },
        xids: { [r1]: xid },
      };
      await db.sql`select realtime.send(${db.sql.json(payload)}, 'unread-rooms-updated', ${`unread-sync:user:${a}`}, true)`;
    };
    // xid 3 committed long before the RPC's snapshot: its value is already in the state.
    await send(99, '999999999', '3');
    // Not in the snapshot (a far-future xid): newer than the RPC state, applied.
    const future = (2n ** 60n).toString();
    await send(7, '1000000000', future);
    await waitFor(() => client.getState().rooms[r1] === 7, 'newer broadcast applied');
    // Same room, lower version, also after the snapshot: a reordered older change, ignored.
    await send(5, '999999998', future);
    await send(7, '1000000000', future); // duplicate
    // A real change of another room as a marker: the topic delivers in order without faults.
    await db.sql`update public.chat_rooms set user_unread_count = 2 where id = ${r2}`;
    await waitFor(() => client.getState().rooms[r2] === 2, 'real change after the crafted ones');
    expect(client.getState().rooms[r1]).toBe(7);
    expect(states.map((s) => s.rooms[r1])).not.toContain(99);
    expect(states.map((s) => s.rooms[r1])).not.toContain(5);
  });

  it('random concurrent changes with dropped, duplicated and reordered deliveries end equal to the database', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ room: fc.nat(4), value: fc.nat(5), side: fc.boolean() }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 3 }),
        async (ops, writers) => {
          const a = uuid();
          const ids = await Promise.all(Array.from({ length: 5 }, (_, i) => (i % 2 ? room(a, uuid(), 1) : room(uuid(), a, 0, 1))));
          // Resync often: a dropped broadcast is only repaired by the next RPC.
          const { client } = await connectAs(a, { resyncIntervalMs: 300 });
          await waitFor(() => client.getState().ready, 'ready');
          server.faults.dropRate = 0.2;
          server.faults.duplicateRate = 0.3;
          server.faults.reorderWindow = 4;
          server.faults.reorderFlushMs = 20;
          try {
            const lanes = Array.from({ length: writers }, (_, w) => ops.filter((_, i) => i % writers === w));
            await Promise.all(
              lanes.map(async (lane) => {
                for (const op of lane) {
                  const id = ids[op.room] as string;
                  if (op.side) await db.sql`update public.chat_rooms set user_unread_count = ${op.value} where id = ${id}`;
                  else await db.sql`update public.chat_rooms set company_unread_count = ${op.value} where id = ${id}`;
                }
              }),
            );
            server.faults.reset();
            await expectEqualsTruth(client, a);
          } finally {
            server.faults.reset();
            client.close();
          }
        },
      ),
      { numRuns: 8 },
    );
  }, 180_000);
});

describe('migration 1764000000005', () => {
  it('goes down and up again on a database with the Realtime schema', async () => {
    const installed = async () =>
      (await db.sql<{ ok: boolean }[]>`select to_regprocedure('public.unread_sync_my_rooms()') is not null as ok`)[0]?.ok;
    expect(await installed()).toBe(true);
    // Down through 0005: every migration from it on (later ones are undone first).
    const files = readdirSync(MIGRATIONS_DIR)
      .filter((f) => /^\d+_.+\.(sql|js)$/.test(f))
      .sort();
    const fromThis = files.length - files.findIndex((f) => f.startsWith('1764000000005'));
    await migrate({ databaseUrl: db.url, direction: 'down', count: fromThis });
    expect(await installed()).toBe(false);
    await migrate({ databaseUrl: db.url, direction: 'up' });
    expect(await installed()).toBe(true);
  });
});
