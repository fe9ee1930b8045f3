/**
 * Issue 10, capture side: every way the app's chat_rooms can change ends with Redis equal to the
 * truth computed by SQL, through the real bridge: counts changed by an app BEFORE trigger,
 * primary-key permutations, replica-role writes, a partitioned chat_rooms, and room ids of type
 * uuid, bigint, integer and text. Unsupported column types are refused before anything changes.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { migrate } from '../src/migrate.js';
import { steppedBridge } from './support/bridge.js';
import { createTestDb, createTestRedis, expectNoDrift, testConfig, truth, uuid, type TestDb, type TestRedis } from './support/env.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A database (optionally with the app's own chat_rooms made by `setup`), migrated, with a stepped bridge. */
async function world(setup?: (db: TestDb) => Promise<void>) {
  const db = await createTestDb({ migrate: setup === undefined, prefix: 'cap' });
  const r = await createTestRedis();
  if (setup) {
    await setup(db);
    await migrate({ databaseUrl: db.url, direction: 'up' });
  }
  const stepper = await steppedBridge(testConfig(db, r), r);
  cleanups.push(async () => {
    await stepper.stop();
    await r.cleanup();
    await db.drop();
  });
  /**
   * Drains the bridge, then: users cached and equal to the truth, and the verifier repaired nothing.
   * Only users the bridge made unknown (a reset) are loaded again; cached ones are compared as
   * the log left them.
   */
  const check = async (users: string[]) => {
    await stepper.drain();
    const unknown: string[] = [];
    for (const u of users) if ((await r.store.read(u)) === null) unknown.push(u);
    if (unknown.length > 0) await stepper.hydrate(unknown);
    await stepper.drain();
    for (const u of users) expect(await r.store.read(u), `user ${u} cached`).not.toBeNull();
    await expectNoDrift(db.sql, r.store, users);
    expect((await stepper.bridge.metrics.driftRepairs.get()).values[0]?.value ?? 0).toBe(0);
  };
  return { db, r, stepper, check };
}

const total = async (r: TestRedis, u: string) => (await r.store.read(u))?.total;

describe('capture sees the final row, whatever changed it', () => {
  it('an app BEFORE trigger bumping or deactivating on `UPDATE ... SET last_message` is logged', async () => {
    const { db, r, stepper, check } = await world();
    await db.sql`alter table chat_rooms add column last_message text`;
    // The common pattern: a new message bumps the counter; a closing message deactivates the room.
    await db.sql.unsafe(`
      create function public.on_message() returns trigger language plpgsql as $$
      begin
        if new.last_message is distinct from old.last_message then
          if new.last_message = 'closed' then new.is_active := false;
          else new.user_unread_count := coalesce(old.user_unread_count, 0) + 1; end if;
        end if;
        return new;
      end $$;
      create trigger app_on_message before update on public.chat_rooms for each row execute function public.on_message();`);
    const [u, c] = [uuid(), uuid()];
    const [a, b] = [uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${a}, ${u}, ${c}, 3), (${b}, ${u}, ${c}, 3)`;
    await stepper.hydrate([u]);
    expect(await total(r, u)).toBe(6);
    await db.sql`update chat_rooms set last_message = 'hi' where id = ${a}`;
    await db.sql`update chat_rooms set last_message = 'again' where id = ${a}`;
    await db.sql`update chat_rooms set last_message = 'closed' where id = ${b}`;
    await stepper.drain();
    expect((await r.store.read(u))?.rooms).toEqual({ [a]: 5 });
    await check([u, c]);
  });

  it('an update that changes none of the rule`s columns logs nothing (the WHEN filter)', async () => {
    const { db } = await world();
    await db.sql`insert into chat_rooms (user_id, user_unread_count) values (${uuid()}, 2)`;
    const before = await db.sql`select count(*)::int as n from unread_sync.changes`;
    await db.sql`update chat_rooms set updated_at = now()`;
    expect(await db.sql`select count(*)::int as n from unread_sync.changes`).toEqual(before);
  });
});

describe('a statement that permutes primary keys logs its net effect', () => {
  it('`SET id = CASE id WHEN A THEN B WHEN B THEN C END` under a deferrable key', async () => {
    const { db, r, stepper, check } = await world();
    await db.sql`alter table chat_rooms drop constraint chat_rooms_pkey`;
    await db.sql`alter table chat_rooms add primary key (id) deferrable initially immediate`;
    const [u, v] = [uuid(), uuid()];
    const [A, B, C] = [uuid(), uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
                 values (${A}, ${u}, ${v}, 3, 1), (${B}, ${u}, ${v}, 5, 0)`;
    await stepper.hydrate([u, v]);
    await db.sql`update chat_rooms set id = case id when ${A}::uuid then ${B}::uuid when ${B}::uuid then ${C}::uuid end
                  where id in (${A}, ${B})`;
    await stepper.drain();
    expect((await r.store.read(u))?.rooms).toEqual({ [B]: 3, [C]: 5 });
    expect((await r.store.read(v))?.rooms).toEqual({ [B]: 1 });
    await check([u, v]);
  });

  it('a swap over two statements of one transaction (key checked at commit)', async () => {
    const { db, r, stepper, check } = await world();
    await db.sql`alter table chat_rooms drop constraint chat_rooms_pkey`;
    await db.sql`alter table chat_rooms add primary key (id) deferrable initially deferred`;
    const [u, w] = [uuid(), uuid()];
    const [A, B] = [uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, user_unread_count) values (${A}, ${u}, 2), (${B}, ${u}, 7)`;
    await db.sql`insert into chat_rooms (user_id, user_unread_count) values (${w}, 1)`;
    await stepper.hydrate([u, w]);
    await db.sql.begin(async (tx) => {
      // Between the two statements two rows share id B.
      await tx`update chat_rooms set id = ${B} where id = ${A} and user_unread_count = 2`;
      await tx`update chat_rooms set id = ${A} where id = ${B} and user_unread_count = 7`;
    });
    await stepper.drain();
    expect((await r.store.read(u))?.rooms).toEqual({ [A]: 7, [B]: 2 });
    await check([u, w]);
  });
});

describe('replica-role writes are captured', () => {
  it('an UPDATE under session_replication_role = replica (data-only restores, logical replication apply)', async () => {
    const { db, r, stepper, check } = await world();
    const u = uuid();
    const [row] = await db.sql<{ id: string }[]>`insert into chat_rooms (user_id, user_unread_count) values (${u}, 2) returning id`;
    await stepper.hydrate([u]);
    await db.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update chat_rooms set user_unread_count = 40 where id = ${row!.id}`;
      await tx`insert into chat_rooms (user_id, user_unread_count) values (${u}, 1)`;
    });
    await stepper.drain();
    expect(await total(r, u)).toBe(41);
    await check([u]);
  });

  it('every capture trigger is ENABLE ALWAYS and its function lives in schema unread_sync', async () => {
    const { db } = await world();
    const rows = await db.sql<{ tgname: string; tgenabled: string; schema: string }[]>`
      select t.tgname, t.tgenabled, n.nspname as schema
        from pg_trigger t join pg_proc p on p.oid = t.tgfoid join pg_namespace n on n.oid = p.pronamespace
       where t.tgrelid = 'public.chat_rooms'::regclass and not t.tgisinternal order by 1`;
    expect(rows).toEqual([
      { tgname: 'unread_sync_capture', tgenabled: 'A', schema: 'unread_sync' },
      { tgname: 'unread_sync_capture_truncate', tgenabled: 'A', schema: 'unread_sync' },
      { tgname: 'unread_sync_capture_update', tgenabled: 'A', schema: 'unread_sync' },
    ]);
  });
});

describe('a partitioned chat_rooms', () => {
  const partitioned = async (db: TestDb) => {
    await db.sql.unsafe(`
      create table chat_rooms (
        id uuid not null, user_id uuid, company_id uuid, user_unread_count int default 0,
        company_unread_count int default 0, is_active boolean default true, region text not null default 'eu',
        primary key (id, region)) partition by list (region);
      create table chat_rooms_eu partition of chat_rooms for values in ('eu');
      create table chat_rooms_us partition of chat_rooms for values in ('us') partition by hash (id);
      create table chat_rooms_us0 partition of chat_rooms_us for values with (modulus 2, remainder 0);
      create table chat_rooms_us1 partition of chat_rooms_us for values with (modulus 2, remainder 1);`);
  };

  it('migrates (indexes per partition, valid), captures moves between partitions and partition TRUNCATE', async () => {
    const { db, r, stepper, check } = await world(partitioned);
    const [valid] = await db.sql<{ n: number; bad: number }[]>`
      select count(*)::int as n, count(*) filter (where not i.indisvalid)::int as bad
        from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname like 'unread_sync_chat_rooms_%'`;
    expect(valid).toEqual({ n: 10, bad: 0 }); // 2 columns x (parent + 4 partitions)
    const [u, c] = [uuid(), uuid()];
    const [a, b] = [uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, region)
                 values (${a}, ${u}, ${c}, 3, 2, 'eu'), (${b}, ${u}, ${c}, 4, 0, 'us')`;
    await stepper.hydrate([u, c]);
    // A row moving between partitions runs as DELETE + INSERT: the room keeps its (new) count.
    await db.sql`update chat_rooms set region = 'us', user_unread_count = 9 where id = ${a}`;
    await stepper.drain();
    expect((await r.store.read(u))?.rooms).toEqual({ [a]: 9, [b]: 4 });
    await check([u, c]);
    // TRUNCATE of one (sub-)partition is a reset: cached users reload the new truth.
    await db.sql`truncate chat_rooms_us1, chat_rooms_us0`;
    await stepper.drain();
    expect(await r.store.read(u)).toBeNull();
    await check([u, c]);
    expect(await total(r, u)).toBe(0);
  });

  it('up, down, up on a partitioned chat_rooms; the app role can add partitions without rights on unread_sync', async () => {
    const { db } = await world(partitioned);
    const state = async () =>
      (
        await db.sql<{ triggers: number; indexes: number; invalid: number }[]>`
          select (select count(*)::int from pg_trigger where tgname like 'unread_sync%' and tgenabled = 'A') as triggers,
                 (select count(*)::int from pg_class where relname like 'unread_sync_chat_rooms_%') as indexes,
                 (select count(*)::int from pg_index i join pg_class c on c.oid = i.indexrelid
                   where c.relname like 'unread_sync_chat_rooms_%' and not i.indisvalid) as invalid`
      )[0];
    expect(await state()).toEqual({ triggers: 15, indexes: 10, invalid: 0 }); // 3 x (parent + 4 partitions)
    await migrate({ databaseUrl: db.url, direction: 'down' });
    expect(await state()).toEqual({ triggers: 0, indexes: 0, invalid: 0 });
    await migrate({ databaseUrl: db.url, direction: 'up' });
    expect(await state()).toEqual({ triggers: 15, indexes: 10, invalid: 0 });
    const role = `app_${db.name}`;
    await db.sql.unsafe(`create role ${role}; grant create, usage on schema public to ${role}; alter table chat_rooms owner to ${role}`);
    try {
      await db.sql.begin(async (tx) => {
        await tx.unsafe(`set local role ${role}`);
        await tx.unsafe(`create table chat_rooms_ap partition of chat_rooms for values in ('ap')`);
      });
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from pg_trigger where tgrelid = 'chat_rooms_ap'::regclass and tgenabled = 'A'`;
      expect(row?.n).toBe(3);
    } finally {
      await db.sql.unsafe(
        `alter table chat_rooms owner to postgres; drop table if exists chat_rooms_ap; drop owned by ${role}; drop role ${role}`,
      );
    }
  });

  it('a partition created later gets the capture; attaching a filled table or detaching one logs a reset', async () => {
    const { db, r, stepper, check } = await world(partitioned);
    const u = uuid();
    await db.sql`insert into chat_rooms (id, user_id, user_unread_count, region) values (${uuid()}, ${u}, 2, 'eu')`;
    await db.sql`create table chat_rooms_ap partition of chat_rooms for values in ('ap')`;
    const [trig] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_trigger where tgrelid = 'chat_rooms_ap'::regclass and tgenabled = 'A'`;
    expect(trig?.n).toBe(3);
    await stepper.hydrate([u]);
    await db.sql`insert into chat_rooms (id, user_id, user_unread_count, region) values (${uuid()}, ${u}, 5, 'ap')`;
    await db.sql`truncate chat_rooms_ap`;
    await stepper.drain();
    expect(await r.store.read(u)).toBeNull();
    await check([u]);
    // A table filled outside chat_rooms, then attached: its rows were never seen by a row trigger.
    await db.sql`create table chat_rooms_sa (like chat_rooms including defaults)`;
    await db.sql`insert into chat_rooms_sa (id, user_id, user_unread_count, region) values (${uuid()}, ${u}, 6, 'sa')`;
    await db.sql`alter table chat_rooms attach partition chat_rooms_sa for values in ('sa')`;
    await stepper.drain();
    expect(await r.store.read(u)).toBeNull();
    await check([u]);
    expect(await total(r, u)).toBe(8);
    await db.sql`alter table chat_rooms detach partition chat_rooms_eu`;
    await stepper.drain();
    expect(await r.store.read(u)).toBeNull();
    await check([u]);
    expect(await total(r, u)).toBe(6);
  });
});

describe('room ids of every supported type, end to end through the bridge', () => {
  const kinds = {
    uuid: { type: 'uuid', ids: () => [uuid(), uuid(), uuid()] },
    bigint: { type: 'bigint', ids: () => ['9007199254740993', '2', '-5'] },
    integer: { type: 'integer', ids: () => ['2147483647', '7', '0'] },
    // Names that would collide with the hash's own fields, or look like prototypes or prefixes.
    text: { type: 'text', ids: () => ['t', '__proto__', 'r:n'] },
  } as const;

  for (const [name, k] of Object.entries(kinds)) {
    it(`${name} room ids`, async () => {
      const { db, r, stepper, check } = await world(async (d) => {
        await d.sql.unsafe(`
          create table chat_rooms (id ${k.type} primary key, user_id uuid, company_id uuid,
            user_unread_count int default 0, company_unread_count int default 0, is_active boolean default true)`);
      });
      const [u, c] = [uuid(), uuid()];
      const [x, y, z] = k.ids();
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
                   values (${x!}, ${u}, ${c}, 2, 1)`;
      await stepper.hydrate([u, c]);
      expect((await r.store.read(u))?.rooms).toEqual({ [x!]: 2 });
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${y!}, ${u}, ${c}, 4)`;
      await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${x!}`;
      await db.sql`update chat_rooms set id = ${z!} where id = ${y!}`;
      await stepper.drain();
      expect(await r.store.read(u)).toMatchObject({ total: 7, unreadRooms: 2, rooms: { [x!]: 3, [z!]: 4 } });
      expect(Object.keys((await truth(db.sql))[u] ?? {}).sort()).toEqual([x!, z!].sort());
      await db.sql`delete from chat_rooms where id = ${x!}`;
      await stepper.drain();
      expect((await r.store.read(c))?.rooms).toEqual({});
      await check([u, c]);
    });
  }
});

describe('column types the capture does not support are refused before anything changes', () => {
  for (const [column, type, expected] of [
    ['id', 'numeric', 'uuid, bigint, integer, text'],
    ['user_id', 'text', 'uuid'],
    ['user_unread_count', 'bigint', 'integer'],
  ] as const) {
    it(`chat_rooms.${column} ${type}`, async () => {
      const db = await createTestDb({ migrate: false, prefix: 'capbad' });
      cleanups.push(() => db.drop());
      const cols: Record<string, string> = {
        id: 'uuid primary key',
        user_id: 'uuid',
        company_id: 'uuid',
        user_unread_count: 'int',
        company_unread_count: 'int',
        is_active: 'boolean',
      };
      cols[column] = type + (column === 'id' ? ' primary key' : '');
      await db.sql.unsafe(
        `create table chat_rooms (${Object.entries(cols)
          .map(([c, t]) => `${c} ${t}`)
          .join(', ')})`,
      );
      await expect(migrate({ databaseUrl: db.url, direction: 'up' })).rejects.toThrow(
        `public.chat_rooms.${column} is of type ${type}, supported: ${expected}`,
      );
      const [row] = await db.sql<{ schema: boolean; triggers: number }[]>`
        select exists (select 1 from pg_namespace where nspname = 'unread_sync') as schema,
               (select count(*)::int from pg_trigger where tgrelid = 'chat_rooms'::regclass and not tgisinternal) as triggers`;
      expect(row).toEqual({ schema: false, triggers: 0 });
    });
  }

  it('a bigint chat_rooms after only the core migration (a run stopped there) still takes app writes', async () => {
    const db = await createTestDb({ migrate: false, prefix: 'capcore' });
    cleanups.push(() => db.drop());
    await db.sql`create table chat_rooms (id bigint generated always as identity primary key, user_id uuid, company_id uuid,
                   user_unread_count int, company_unread_count int, is_active boolean default true)`;
    await migrate({ databaseUrl: db.url, direction: 'up', count: 1 });
    await db.sql`insert into chat_rooms (user_id, user_unread_count) values (${uuid()}, 1)`;
    await db.sql`update chat_rooms set user_unread_count = 2`;
    await migrate({ databaseUrl: db.url, direction: 'up' });
    await db.sql`update chat_rooms set user_unread_count = 3`;
    const [row] = await db.sql<
      { room_id: string; unread: number }[]
    >`select room_id, unread from unread_sync.changes order by id desc limit 1`;
    expect(row).toEqual({ room_id: '1', unread: 3 });
    // And back: down/up/down leaves the app's table with its rows and no unread-sync trigger.
    await migrate({ databaseUrl: db.url, direction: 'down' });
    await migrate({ databaseUrl: db.url, direction: 'up' });
    await migrate({ databaseUrl: db.url, direction: 'down' });
    const [after] = await db.sql<{ n: number; triggers: number }[]>`
      select (select count(*)::int from chat_rooms) as n,
             (select count(*)::int from pg_trigger where tgrelid = 'chat_rooms'::regclass and not tgisinternal) as triggers`;
    expect(after).toEqual({ n: 1, triggers: 0 });
  });
});
