import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createTestRedis, uuid } from './support/env.js';
import { useRedis } from './support/fixture.js';
import type { RoomChange } from '../src/store/store.js';
import { roomField } from '../src/store/keys.js';

const r = useRedis();

const apply = (user: string, changes: RoomChange[]) => r.store.apply(new Map([[user, changes]]));
const set = (roomId: string, unread: number, version: number): RoomChange => ({ roomId, unread, version: String(version) });

describe('Redis store (Lua scripts)', () => {
  it('a missing user is unknown: changes build nothing', async () => {
    const u = uuid();
    const [res] = await apply(u, [set(uuid(), 3, 1)]);
    expect(res?.applied).toBe(-1);
    expect(await r.redis.exists(r.store.keys.user(u))).toBe(0);
    expect(await r.store.read(u)).toBeNull();
  });

  it('text room ids named like the reserved fields (t, n, s) or a prototype never collide with them', async () => {
    const u = uuid();
    await r.store.hydrate(
      new Map([
        [
          u,
          [
            { roomId: 't', unread: 2 },
            { roomId: '__proto__', unread: 1 },
          ],
        ],
      ]),
    );
    await apply(u, [set('n', 4, 1), set('s', 3, 2), set('t', 5, 3)]);
    expect(await r.store.read(u)).toMatchObject({ total: 13, unreadRooms: 4, rooms: { t: 5, n: 4, s: 3, ['__proto__']: 1 } });
    await apply(u, [set('t', 0, 4), set('n', 0, 5)]);
    const c = await r.store.read(u);
    expect(c).toMatchObject({ total: 4, unreadRooms: 2 });
    expect(Object.entries(c?.rooms ?? {}).sort()).toEqual([
      ['__proto__', 1],
      ['s', 3],
    ]);
    expect(await r.store.readTotals(u)).toMatchObject({ total: 4, unreadRooms: 2 });
  });

  it('a hydrated user with nothing unread is one small key with total 0', async () => {
    const u = uuid();
    await r.store.hydrate(new Map([[u, []]]));
    expect(await r.store.read(u)).toMatchObject({ total: 0, unreadRooms: 0, rooms: {} });
    expect(await r.redis.hlen(r.store.keys.user(u))).toBe(3);
  });

  it('duplicates and stale versions never change the result; rooms at 0 leave the hash', async () => {
    const [u, a, b] = [uuid(), uuid(), uuid()];
    await r.store.hydrate(new Map([[u, [{ roomId: a, unread: 2 }]]]));
    await apply(u, [set(a, 5, 10), set(b, 1, 11)]);
    await apply(u, [set(a, 5, 10), set(a, 4, 9), set(b, 7, 3)]); // duplicate and stale
    expect(await r.store.read(u)).toMatchObject({ total: 6, unreadRooms: 2, rooms: { [a]: 5, [b]: 1 } });
    await apply(u, [set(a, 0, 12)]);
    await apply(u, [set(a, 5, 10)]); // stale after the room was read: the tombstone rejects it
    expect(await r.store.read(u)).toMatchObject({ total: 1, unreadRooms: 1, rooms: { [b]: 1 } });
    expect(await r.redis.hexists(r.store.keys.user(u), roomField(a))).toBe(0);
    expect(await r.redis.hexists(r.store.keys.tombstones(u), roomField(a))).toBe(1);
  });

  it('publishes "total unreadRooms seq" with a seq that only grows, also across re-hydration', async () => {
    const u = uuid();
    const sub = r.redis.duplicate();
    const seen: string[] = [];
    sub.on('smessage', (_c: string, m: string) => seen.push(m));
    await sub.ssubscribe(r.store.keys.channel(u));
    await r.store.hydrate(new Map([[u, []]]));
    await apply(u, [set(uuid(), 2, 1)]);
    await r.store.hydrate(new Map([[u, [{ roomId: uuid(), unread: 9 }]]]));
    await apply(u, [set(uuid(), 1, 2)]);
    await new Promise((res) => setTimeout(res, 50));
    sub.disconnect();
    expect(seen.map((m) => m.split(' ').slice(0, 2).join(' '))).toEqual(['0 0', '2 1', '9 1', '10 2']);
    const seqs = seen.map((m) => Number(m.split(' ')[2]));
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number);
  });

  it('property: any delivery order with duplicates ends in the state of the newest version per room', async () => {
    const rooms = [uuid(), uuid(), uuid(), uuid()];
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ room: fc.nat(3), unread: fc.nat(20) }), { minLength: 1, maxLength: 30 }),
        fc.array(fc.nat(1000), { minLength: 0, maxLength: 60 }),
        fc.integer({ min: 1, max: 5 }),
        async (history, noise, chunk) => {
          const u = uuid();
          await r.store.hydrate(new Map([[u, []]]));
          // The log: versions 1..n in order. Delivery: shuffled by `noise`, with duplicates.
          const log = history.map((h, i) => set(rooms[h.room] as string, h.unread, i + 1));
          const delivery = [...log, ...noise.map((k) => log[k % log.length] as RoomChange)];
          const order = delivery.map((c, i) => ({ c, k: noise[i % Math.max(1, noise.length)] ?? i }));
          order.sort((x, y) => x.k - y.k);
          for (let i = 0; i < order.length; i += chunk)
            await apply(
              u,
              order.slice(i, i + chunk).map((o) => o.c),
            );
          const expected: Record<string, number> = {};
          for (const c of log) {
            if (c.unread > 0) expected[c.roomId] = c.unread;
            else delete expected[c.roomId];
          }
          const got = await r.store.read(u);
          expect(got?.rooms).toEqual(expected);
          expect(got?.total).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
          expect(got?.unreadRooms).toBe(Object.keys(expected).length);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a reset deletes every per-user key of its prefix, old layouts included, and nothing else', async () => {
    // Its own prefix: the other tests' users would be counted too.
    const r = await createTestRedis();
    const user = uuid();
    await r.store.hydrate(new Map([[user, [{ roomId: 'a', unread: 2, version: '1' }]]]), null);
    const other = `${r.prefix.slice(0, -1)}x:`; // another prefix that starts like ours
    await r.redis.hset(`${r.prefix}u:{${user}}`, 'a', '1:1'); // layout 1
    await r.redis.hset(`${r.prefix}d:{${user}}`, 'a', '1');
    await r.redis.set(`${other}u2:{${user}}`, 'theirs');
    await r.redis.set(`${r.prefix}hydrate-not-a-user`, 'kept');
    await r.redis.set(`${r.prefix}u2:${user}`, 'kept: no hash tag, not a user key');
    const removed = await r.store.forgetAll();
    expect(removed).toBe(3);
    expect(await r.redis.exists(`${r.prefix}u2:{${user}}`, `${r.prefix}u:{${user}}`, `${r.prefix}d:{${user}}`)).toBe(0);
    expect(await r.redis.get(`${other}u2:{${user}}`)).toBe('theirs');
    expect(await r.redis.get(`${r.prefix}hydrate-not-a-user`)).toBe('kept');
    expect(await r.redis.exists(`${r.prefix}u2:${user}`)).toBe(1);
    await r.redis.del(`${other}u2:{${user}}`);
    await r.cleanup();
  });

  it('dead letters are capped', async () => {
    for (let i = 0; i < 120; i++) await r.store.deadLetter({ reason: `bad ${i}`, event: { i }, source: 'test' });
    expect(await r.redis.llen(r.store.keys.deadLetters)).toBe(100);
    expect((await r.store.deadLetters(1))[0]).toMatchObject({ reason: 'bad 119' });
  });
});
