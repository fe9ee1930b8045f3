import fc from 'fast-check';
import type { Sql } from '../../src/db.js';
import { sleep } from '../../src/sleep.js';

/**
 * The random concurrent history shared by the property tests (single Redis and cluster): rooms
 * and users are indexes into per-run id lists, each connection runs its transactions in order.
 */
export type Side = 'user' | 'company';
export type Op =
  | { t: 'msg'; room: number; side: Side; n: number }
  | { t: 'read'; room: number; side: Side }
  | { t: 'toggle'; room: number }
  | { t: 'delete'; room: number }
  | { t: 'insert'; room: number; user: number; company: number; uc: number; cc: number }
  | { t: 'reassign'; room: number; side: Side; user: number }
  | { t: 'negative'; room: number }
  // Extended set (issue 10): several rows per statement, primary-key permutations, and counts
  // changed by the app's BEFORE trigger on a statement that names none of them.
  | { t: 'bulk'; rooms: number[]; side: Side; n: number }
  | { t: 'bulkRead'; rooms: number[] }
  | { t: 'permute'; rooms: number[] }
  | { t: 'touch'; room: number };

export interface Tx {
  ops: Op[];
  end: 'commit' | 'rollback';
  /** Run every op after the first in a savepoint that is rolled back. */
  savepointRollback: boolean;
  /** Keep the transaction open this long while other connections commit. */
  holdMs: number;
}

/**
 * The app schema the extended workload needs: a deferrable primary key (a permutation of ids is
 * legal within one statement) and a BEFORE trigger that bumps the user's count when a message
 * arrives, on `UPDATE ... SET last_message` alone.
 */
export async function extendedSchema(sql: Sql): Promise<void> {
  await sql.unsafe(`
    alter table chat_rooms add column if not exists last_message text;
    alter table chat_rooms drop constraint chat_rooms_pkey;
    alter table chat_rooms add primary key (id) deferrable initially immediate;
    create function public.bump_on_message() returns trigger language plpgsql as $$
    begin
      if new.last_message is distinct from old.last_message then
        new.user_unread_count := greatest(coalesce(old.user_unread_count, 0), 0) + 1;
      end if;
      return new;
    end $$;
    create trigger bump_on_message before update on public.chat_rooms
      for each row execute function public.bump_on_message();`);
}

export function workloadArbitrary(rooms: number, users: number, maxHoldMs = 120, extended = false): fc.Arbitrary<Tx[][]> {
  const side = fc.constantFrom<Side>('user', 'company');
  const room = fc.nat(rooms - 1);
  const user = fc.nat(users - 1);
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ t: fc.constant('msg' as const), room, side, n: fc.integer({ min: 1, max: 5 }) }) },
    { weight: 3, arbitrary: fc.record({ t: fc.constant('read' as const), room, side }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('toggle' as const), room }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), room }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('insert' as const), room, user, company: user, uc: fc.nat(4), cc: fc.nat(4) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('reassign' as const), room, side, user }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('negative' as const), room }) },
  );
  const some = (min: number) => fc.uniqueArray(room, { minLength: min, maxLength: Math.min(4, rooms) });
  const extra: fc.Arbitrary<Op> = fc.oneof(
    { weight: 2, arbitrary: fc.record({ t: fc.constant('bulk' as const), rooms: some(1), side, n: fc.integer({ min: 1, max: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('bulkRead' as const), rooms: some(1) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('permute' as const), rooms: some(2) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('touch' as const), room }) },
  );
  const anyOp = extended ? fc.oneof({ weight: 3, arbitrary: op }, { weight: 1, arbitrary: extra }) : op;
  const tx: fc.Arbitrary<Tx> = fc.record({
    ops: fc.array(anyOp, { minLength: 1, maxLength: 4 }),
    end: fc.constantFrom<'commit' | 'rollback'>('commit', 'commit', 'commit', 'rollback'),
    savepointRollback: fc.boolean(),
    holdMs: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 5, max: maxHoldMs })),
  });
  return fc.array(fc.array(tx, { minLength: 1, maxLength: 6 }), { minLength: 4, maxLength: 6 });
}

/** Inserts one room per index, spread over the users, with some unread already. */
export async function seedRooms(sql: Sql, rooms: string[], users: string[]): Promise<void> {
  for (let i = 0; i < rooms.length; i++) {
    await sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
              values (${rooms[i]!}, ${users[i % users.length]!}, ${users[(i * 3 + 1) % users.length]!}, ${i % 3}, ${i % 2})`;
  }
}

function runOp(q: Sql, o: Op, rooms: string[], users: string[]) {
  const id = rooms['room' in o ? o.room : 0]!;
  switch (o.t) {
    case 'msg':
      return o.side === 'user'
        ? q`update chat_rooms set user_unread_count = greatest(coalesce(user_unread_count, 0), 0) + ${o.n} where id = ${id}`
        : q`update chat_rooms set company_unread_count = greatest(coalesce(company_unread_count, 0), 0) + ${o.n} where id = ${id}`;
    case 'read':
      return o.side === 'user'
        ? q`update chat_rooms set user_unread_count = 0 where id = ${id}`
        : q`update chat_rooms set company_unread_count = 0 where id = ${id}`;
    case 'toggle':
      return q`update chat_rooms set is_active = not coalesce(is_active, false) where id = ${id}`;
    case 'delete':
      return q`delete from chat_rooms where id = ${id}`;
    case 'insert':
      // Not ON CONFLICT: it cannot use a deferrable key (extended schema) as its arbiter.
      return q`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
               select ${id}, ${users[o.user]!}, ${users[o.company]!}, ${o.uc}, ${o.cc}
                where not exists (select 1 from chat_rooms where id = ${id})`;
    case 'reassign':
      return o.side === 'user'
        ? q`update chat_rooms set user_id = ${users[o.user]!} where id = ${id}`
        : q`update chat_rooms set company_id = ${users[o.user]!} where id = ${id}`;
    case 'negative':
      return q`update chat_rooms set user_unread_count = -1 where id = ${id}`;
    case 'bulk': {
      const ids = o.rooms.map((k) => rooms[k]!);
      return o.side === 'user'
        ? q`update chat_rooms set user_unread_count = greatest(coalesce(user_unread_count, 0), 0) + ${o.n} where id = any(${ids}::uuid[])`
        : q`update chat_rooms set company_unread_count = greatest(coalesce(company_unread_count, 0), 0) + ${o.n} where id = any(${ids}::uuid[])`;
    }
    case 'bulkRead':
      return q`update chat_rooms set user_unread_count = 0, company_unread_count = 0 where id = any(${o.rooms.map((k) => rooms[k]!)}::uuid[])`;
    case 'permute': {
      // Rotates the ids of these rooms in one statement (A->B, B->C, ..., last->A): the set of ids
      // stays the same, so later ops still address known rooms.
      const from = o.rooms.map((k) => rooms[k]!);
      const to = [...from.slice(1), from[0]!];
      return q`update chat_rooms set id = (${to}::uuid[])[array_position(${from}::uuid[], id)] where id = any(${from}::uuid[])`;
    }
    case 'touch':
      return q`update chat_rooms set last_message = md5(random()::text) where id = ${id}`;
  }
}

/** Runs one connection's transactions; rollbacks and deadlocks are real outcomes, not failures. */
export async function runConnection(sql: Sql, txs: Tx[], rooms: string[], users: string[]): Promise<void> {
  for (const t of txs) {
    await sql
      .begin(async (tx) => {
        const q = tx as unknown as Sql;
        const [first, ...rest] = t.ops;
        await runOp(q, first!, rooms, users);
        if (t.savepointRollback) {
          await tx
            .savepoint(async (sp) => {
              for (const o of rest) await runOp(sp as unknown as Sql, o, rooms, users);
              throw new Error('savepoint rolled back');
            })
            .catch(() => {});
        } else {
          for (const o of rest) await runOp(q, o, rooms, users);
        }
        if (t.holdMs > 0) await sleep(t.holdMs); // others commit meanwhile
        if (t.end === 'rollback') throw new Error('rolled back');
      })
      .catch(() => {});
  }
}
