import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import type { SteppedBridge } from './support/bridge.js';

type Change = { kind: string; user_id: string | null; room_id: string | null; unread: number | null; negative: boolean };

const env = useEnv();
const { db, r } = env;
let stepper: SteppedBridge;

beforeAll(async () => {
  stepper = await env.steppedBridge(); // stopped by the fixture
});

let lastId = 0n;
beforeEach(() => mark());

/** Only changes written after this call are returned by newChanges(). */
async function mark() {
  const [row] = await db.sql<{ max: string | null }[]>`select max(id)::text as max from unread_sync.changes`;
  lastId = BigInt(row?.max ?? 0);
}

async function newChanges(): Promise<Change[]> {
  return db.sql<Change[]>`
    select kind, user_id, room_id, unread, negative from unread_sync.changes
     where id > ${lastId.toString()}::bigint order by id`;
}

const pick = <T extends object, K extends keyof T>(o: T, k: K, fallback: NonNullable<T[K]>) => (k in o ? (o[k] ?? null) : fallback);

async function room(values: {
  user?: string | null;
  company?: string | null;
  uc?: number | null;
  cc?: number | null;
  active?: boolean | null;
}) {
  const id = uuid();
  await db.sql`
    insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
    values (${id}, ${values.user ?? null}, ${values.company ?? null}, ${pick(values, 'uc', 0)}, ${pick(values, 'cc', 0)}, ${pick(values, 'active', true)})`;
  return id;
}

/** Applies the new events to Redis and returns the user's cached rooms. */
async function cached(user: string) {
  await stepper.drain();
  return (await r.store.read(user))?.rooms ?? null;
}

describe('trigger semantics: every committed change becomes exact per-(user, room) events', () => {
  it('a new room emits one event per side with unread', async () => {
    const [u, c] = [uuid(), uuid()];
    await stepper.hydrate([u, c]);
    const id = await room({ user: u, company: c, uc: 2, cc: 0 });
    expect(await newChanges()).toEqual([{ kind: 'set', user_id: u, room_id: id, unread: 2, negative: false }]);
    expect(await cached(u)).toEqual({ [id]: 2 });
    expect(await cached(c)).toEqual({});
  });

  it('a message arriving raises the count; reading the room sets it to 0 and drops it from the hash', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c });
    await stepper.hydrate([u, c]);
    await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
    await db.sql`update chat_rooms set company_unread_count = company_unread_count + 3 where id = ${id}`;
    expect(await cached(u)).toEqual({ [id]: 1 });
    expect(await cached(c)).toEqual({ [id]: 3 });
    await mark();
    await db.sql`update chat_rooms set user_unread_count = 0 where id = ${id}`;
    expect((await newChanges()).at(-1)).toEqual({ kind: 'set', user_id: u, room_id: id, unread: 0, negative: false });
    expect(await cached(u)).toEqual({});
    expect((await r.store.read(u))?.total).toBe(0);
  });

  it('is_active flipped off zeroes both sides; flipped on restores them', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c, uc: 4, cc: 5 });
    await stepper.hydrate([u, c]);
    await mark();
    await db.sql`update chat_rooms set is_active = false where id = ${id}`;
    expect((await newChanges()).map((e) => [e.user_id, e.unread]).sort()).toEqual(
      [
        [c, 0],
        [u, 0],
      ].sort(),
    );
    expect(await cached(u)).toEqual({});
    expect(await cached(c)).toEqual({});
    await db.sql`update chat_rooms set is_active = true where id = ${id}`;
    expect(await cached(u)).toEqual({ [id]: 4 });
    expect(await cached(c)).toEqual({ [id]: 5 });
  });

  it('NULL is_active counts as inactive, NULL counts as 0, NULL ids emit nothing', async () => {
    const [u, c] = [uuid(), uuid()];
    await room({ user: u, company: c, uc: 3, cc: 3, active: null });
    await room({ user: null, company: null, uc: 7, cc: 7 });
    const id = await room({ user: u, company: c, uc: null, cc: 2 });
    expect(await newChanges()).toEqual([{ kind: 'set', user_id: c, room_id: id, unread: 2, negative: false }]);
  });

  it('a deleted room emits 0 for each side that had unread', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c, uc: 1, cc: 0 });
    await stepper.hydrate([u]);
    await mark();
    await db.sql`delete from chat_rooms where id = ${id}`;
    const mine = (await newChanges()).filter((e) => e.room_id === id);
    expect(mine.at(-1)).toEqual({ kind: 'set', user_id: u, room_id: id, unread: 0, negative: false });
    expect(await cached(u)).toEqual({});
  });

  it('reassigning user_id moves the count to the new owner in one transaction', async () => {
    const [a, b, c] = [uuid(), uuid(), uuid()];
    const id = await room({ user: a, company: c, uc: 6 });
    await stepper.hydrate([a, b]);
    await mark();
    await db.sql`update chat_rooms set user_id = ${b} where id = ${id}`;
    expect((await newChanges()).map((e) => [e.user_id, e.unread]).sort()).toEqual(
      [
        [a, 0],
        [b, 6],
      ].sort(),
    );
    expect(await cached(a)).toEqual({});
    expect(await cached(b)).toEqual({ [id]: 6 });
  });

  it('reassigning company_id moves the company side', async () => {
    const [u, c1, c2] = [uuid(), uuid(), uuid()];
    const id = await room({ user: u, company: c1, cc: 2 });
    await stepper.hydrate([c1, c2]);
    await db.sql`update chat_rooms set company_id = ${c2} where id = ${id}`;
    expect(await cached(c1)).toEqual({});
    expect(await cached(c2)).toEqual({ [id]: 2 });
  });

  it('user_id = company_id: the room counts once, with the user side', async () => {
    const u = uuid();
    const id = await room({ user: u, company: u, uc: 2, cc: 9 });
    expect(await newChanges()).toEqual([{ kind: 'set', user_id: u, room_id: id, unread: 2, negative: false }]);
    await mark();
    await db.sql`update chat_rooms set company_unread_count = 50 where id = ${id}`;
    expect(await newChanges()).toEqual([]);
    // Hydration reads both sides' indexes and must still count the room once.
    await stepper.hydrate([u]);
    expect(await r.store.read(u)).toMatchObject({ total: 2, unreadRooms: 1, rooms: { [id]: 2 } });
  });

  it('negative counts are treated as 0 and flagged', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c, uc: 3 });
    await stepper.hydrate([u]);
    await mark();
    await db.sql`update chat_rooms set user_unread_count = -4 where id = ${id}`;
    expect(await newChanges()).toEqual([{ kind: 'set', user_id: u, room_id: id, unread: 0, negative: true }]);
    const counter = async () => (await stepper.bridge.metrics.negativeCounts.get()).values[0]?.value ?? 0;
    const before = await counter();
    expect(await cached(u)).toEqual({});
    expect(await counter()).toBe(before + 1);
  });

  it('updates that do not change the effective unread emit nothing', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c, uc: 1, active: false });
    await mark();
    await db.sql`update chat_rooms set user_unread_count = 8 where id = ${id}`; // inactive room
    await db.sql`update chat_rooms set user_unread_count = 0, company_unread_count = 0 where id = ${id}`;
    await db.sql`update chat_rooms set updated_at = now() where id = ${id}`;
    expect(await newChanges()).toEqual([]);
  });

  it('a changed primary key moves the unread to the new room id', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c, uc: 2 });
    await stepper.hydrate([u]);
    const next = uuid();
    await db.sql`update chat_rooms set id = ${next} where id = ${id}`;
    expect(await cached(u)).toEqual({ [next]: 2 });
  });

  it('a rolled-back transaction and a rolled-back savepoint emit nothing that reaches Redis', async () => {
    const [u, c] = [uuid(), uuid()];
    const id = await room({ user: u, company: c, uc: 1 });
    await stepper.hydrate([u]);
    await db.sql
      .begin(async (tx) => {
        await tx`update chat_rooms set user_unread_count = 100 where id = ${id}`;
        throw new Error('rollback');
      })
      .catch(() => {});
    await db.sql.begin(async (tx) => {
      await tx
        .savepoint(async (sp) => {
          await sp`update chat_rooms set user_unread_count = 50 where id = ${id}`;
          throw new Error('rollback savepoint');
        })
        .catch(() => {});
      await tx`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
    });
    expect(await cached(u)).toEqual({ [id]: 2 });
  });

  it('TRUNCATE logs a reset: every cached user becomes unknown, then hydrates to the new truth', async () => {
    const [u, c] = [uuid(), uuid()];
    await room({ user: u, company: c, uc: 1 });
    await stepper.hydrate([u]);
    expect(await cached(u)).not.toBeNull();
    await db.sql`truncate chat_rooms`;
    expect((await newChanges()).at(-1)?.kind).toBe('reset');
    expect(await cached(u)).toBeNull();
    await stepper.hydrate([u]);
    expect(await cached(u)).toEqual({});
  });
});
