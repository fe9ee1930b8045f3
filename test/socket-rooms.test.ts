import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Socket } from 'socket.io-client';
import { testConfig, testLogger, truth, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { connectClient, socketConfig, startTestSocketServer, testSecret, token, until, type BadgeClient } from './support/socket.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import type { RunningSocketServer } from '../src/socket/server.js';
import type { RoomsUpdatedPayload, UnreadCountsReply } from '../src/socket/badges.js';

const { db, r } = useEnv();
let bridge: RunningBridge;
let server: RunningSocketServer;
const secret = testSecret();
const log = testLogger();

async function room(userId: string | null, companyId: string | null, userCount = 0, companyCount = 0): Promise<string> {
  const id = uuid();
  await db.sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
               values (${id}, ${userId}, ${companyId}, ${userCount}, ${companyCount}, true)`;
  return id;
}

/** A client that keeps the room list by the contract's rule (what the client library does). */
class RoomsClient {
  seq = 0;
  total = 0;
  unreadRooms = 0;
  rooms: Record<string, number> = {};
  ready = false;
  readonly events: RoomsUpdatedPayload[] = [];
  gaps = 0;

  constructor(readonly c: BadgeClient) {
    c.socket.on('unread-rooms-updated', (p: RoomsUpdatedPayload) => {
      this.events.push(p);
      this.onEvent(p);
    });
  }

  get socket(): Socket {
    return this.c.socket;
  }

  onEvent(p: RoomsUpdatedPayload): void {
    if (p.full) {
      if (p.seq >= this.seq) this.replace(p.seq, p.totalUnreadCount, p.unreadRooms, p.rooms);
      return;
    }
    if (p.seq <= this.seq) return;
    if (p.baseSeq <= this.seq && this.ready) {
      const next = { ...this.rooms };
      for (const [room, n] of Object.entries(p.rooms)) {
        if (n > 0) next[room] = n;
        else delete next[room];
      }
      this.rooms = next;
      this.seq = p.seq;
      this.total = p.totalUnreadCount;
      this.unreadRooms = p.unreadRooms;
      return;
    }
    this.gaps++;
    void this.fetch();
  }

  async fetch(): Promise<void> {
    const reply = (await this.socket.emitWithAck('get-unread-counts', {})) as UnreadCountsReply;
    if (reply.seq >= this.seq) this.replace(reply.seq, reply.totalUnreadCount, reply.unreadRooms, reply.rooms);
  }

  private replace(seq: number, total: number, unreadRooms: number, rooms: Record<string, number>): void {
    this.seq = seq;
    this.total = total;
    this.unreadRooms = unreadRooms;
    this.rooms = { ...rooms };
    this.ready = true;
  }
}

async function connectRooms(userId: string): Promise<RoomsClient> {
  const c = await connectClient(server.url, { token: await token(secret, userId) }, userId);
  return new RoomsClient(c);
}

const sorted = (m: Record<string, number>) => Object.entries(m).sort(([a], [b]) => a.localeCompare(b));

/** Waits until the client equals both Redis and the truth from chat_rooms. */
async function expectConverged(client: RoomsClient, userId: string): Promise<void> {
  await waitForBridge(db.sql);
  const expected = (await truth(db.sql))[userId] ?? {};
  await until(
    async () => {
      const cached = await r.store.read(userId);
      return cached !== null && client.seq === cached.seq && JSON.stringify(sorted(client.rooms)) === JSON.stringify(sorted(cached.rooms));
    },
    15_000,
    'client state equal to Redis',
  );
  expect(sorted(client.rooms)).toEqual(sorted(expected));
  expect(client.total).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
  expect(client.unreadRooms).toBe(Object.keys(expected).length);
}

beforeAll(async () => {
  bridge = startBridge(testConfig(db, r), log);
  server = await startTestSocketServer(socketConfig(r, secret), log);
});

afterAll(async () => {
  await server?.close();
  await bridge?.stop();
});

describe('unread-rooms-updated', () => {
  it('sends the full room map first, then per-room deltas with the new counts', async () => {
    const a = uuid();
    const other = uuid();
    const r1 = await room(a, other, 3, 5);
    const r2 = await room(other, a, 1, 4);
    const r3 = await room(a, null, 0, 0);
    const client = await connectRooms(a);
    await until(() => client.events.length > 0, 10_000, 'first rooms event');
    const first = client.events[0] as RoomsUpdatedPayload;
    expect(first).toMatchObject({ userId: a, full: true, totalUnreadCount: 7, unreadRooms: 2, rooms: { [r1]: 3, [r2]: 4 } });
    expect(first.seq).toBe(client.c.last()?.seq);

    await db.sql`update public.chat_rooms set user_unread_count = 10 where id = ${r1}`;
    await until(() => client.total === 10 + 4, 10_000, 'delta for r1');
    const delta = client.events.at(-1) as RoomsUpdatedPayload;
    expect(delta).toMatchObject({ full: false, baseSeq: first.seq, rooms: { [r1]: 10 }, totalUnreadCount: 14, unreadRooms: 2 });
    expect(Object.keys(delta.rooms)).toEqual([r1]);

    // A room read goes out as 0, a new unread room with its count.
    await db.sql`update public.chat_rooms set company_unread_count = 0 where id = ${r2}`;
    await until(() => client.rooms[r2] === undefined, 10_000, 'r2 read');
    expect((client.events.at(-1) as RoomsUpdatedPayload).rooms).toEqual({ [r2]: 0 });
    await db.sql`update public.chat_rooms set user_unread_count = 2 where id = ${r3}`;
    await until(() => client.rooms[r3] === 2, 10_000, 'r3 unread');
    // The total event is still sent, with the same seq as the rooms event.
    await until(() => client.c.last()?.seq === client.seq, 10_000, 'total event with the same seq');
    expect(client.c.last()?.totalUnreadCount).toBe(12);
    expect(client.gaps).toBe(0);
    await expectConverged(client, a);
    client.c.close();
  });

  it('sends every newcomer a full map first, even while deltas flow to the others', async () => {
    const a = uuid();
    const rooms = [await room(a, null, 1), await room(null, a, 0, 2)];
    const first = await connectRooms(a);
    await until(() => first.ready, 10_000, 'first client ready');
    const writes = Promise.all(
      Array.from(
        { length: 40 },
        (_, i) => db.sql`update public.chat_rooms set user_unread_count = ${i + 1} where id = ${rooms[0] as string}`,
      ),
    );
    const second = await connectRooms(a);
    await writes;
    await until(() => second.events.length > 0, 10_000, 'second client first event');
    expect(second.events[0]?.full).toBe(true);
    await expectConverged(first, a);
    await expectConverged(second, a);
    expect(first.gaps + second.gaps).toBe(0);
    first.c.close();
    second.c.close();
  });

  it('coalesces a burst of 100 changes over 5 rooms into few rooms events, in seq order', async () => {
    const a = uuid();
    const rooms = await Promise.all(Array.from({ length: 5 }, () => room(a, uuid())));
    const client = await connectRooms(a);
    await until(() => client.ready, 10_000, 'ready');
    const before = client.events.length;
    await Promise.all(
      Array.from(
        { length: 100 },
        (_, i) => db.sql`update public.chat_rooms set user_unread_count = user_unread_count + 1 where id = ${rooms[i % 5] as string}`,
      ),
    );
    await expectConverged(client, a);
    const burst = client.events.slice(before);
    console.log(`burst of 100 changes over 5 rooms -> ${burst.length} unread-rooms-updated events`);
    expect(burst.length).toBeLessThan(40);
    // Deltas, except that a reconcile (every 200 ms in these tests) which reads a seq ahead of the
    // publishes still in flight on the subscriber connection sends the map in full (it cannot tell
    // a late publish from a lost one): at most one per tick during the burst.
    expect(burst.filter((e) => e.full).length).toBeLessThanOrEqual(2);
    for (let i = 1; i < client.events.length; i++) {
      expect(client.events[i]?.seq).toBeGreaterThan(client.events[i - 1]?.seq as number);
    }
    for (const id of rooms) expect(client.rooms[id]).toBe(20);
    client.c.close();
  });

  it('sends the full map again after a reset (TRUNCATE)', async () => {
    const a = uuid();
    await room(a, null, 2);
    const client = await connectRooms(a);
    await until(() => client.total === 2, 10_000, 'first state');
    const n = client.events.length;
    await db.sql`truncate public.chat_rooms`;
    await until(() => client.events.slice(n).some((e) => e.full), 10_000, 'full event after reset');
    await until(() => client.total === 0, 10_000, 'total 0 after truncate');
    expect(client.rooms).toEqual({});
    client.c.close();
  });

  it('a client applying the rule equals Redis and the database after random concurrent changes and refetches', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('set' as const), room: fc.nat(5), side: fc.boolean(), value: fc.nat(4), active: fc.boolean() }),
            fc.record({ kind: fc.constant('fetch' as const) }),
          ),
          { minLength: 5, maxLength: 60 },
        ),
        fc.integer({ min: 1, max: 4 }),
        async (ops, writers) => {
          runs++;
          const a = uuid();
          // Rooms on both sides; a room's value returns to earlier counts often (A-B-A), which
          // only the version diff catches for a client that refetched in between.
          const ids = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? room(a, uuid(), 1) : room(uuid(), a, 0, 1))));
          const client = await connectRooms(a);
          try {
            await until(() => client.ready, 10_000, 'ready');
            const lanes = Array.from({ length: writers }, (_, w) => ops.filter((_, i) => i % writers === w));
            await Promise.all(
              lanes.map(async (lane) => {
                for (const op of lane) {
                  if (op.kind === 'fetch') {
                    await client.fetch();
                    continue;
                  }
                  const id = ids[op.room] as string;
                  if (op.side) {
                    await db.sql`update public.chat_rooms set user_unread_count = ${op.value}, is_active = ${op.active}
                                 where id = ${id}`;
                  } else {
                    await db.sql`update public.chat_rooms set user_unread_count = ${op.value}, company_unread_count = ${op.value},
                                 is_active = ${op.active} where id = ${id}`;
                  }
                }
              }),
            );
            await expectConverged(client, a);
          } finally {
            client.c.close();
          }
        },
      ),
      { numRuns: 25 },
    );
    expect(runs).toBe(25);
  }, 240_000);
});
