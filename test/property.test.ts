import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../src/reader.js';
import { startBridge, type RunningBridge } from '../src/runtime.js';
import {
  createTestDb, createTestRedis, drifted, testConfig, testLogger, truth, uuid, waitForBridge,
  type TestDb, type TestRedis,
} from './support/env.js';

/**
 * The central correctness claim: whatever committed history of chat_rooms writes happens, from
 * several connections at once, with transactions held open while later ones commit, rollbacks,
 * savepoints and hydrations racing the stream, Redis ends equal to the truth computed by SQL.
 */

type Side = 'user' | 'company';
type Op =
  | { t: 'msg'; room: number; side: Side; n: number }
  | { t: 'read'; room: number; side: Side }
  | { t: 'toggle'; room: number }
  | { t: 'delete'; room: number }
  | { t: 'insert'; room: number; user: number; company: number; uc: number; cc: number }
  | { t: 'reassign'; room: number; side: Side; user: number }
  | { t: 'negative'; room: number };
interface Tx {
  ops: Op[];
  end: 'commit' | 'rollback';
  savepointRollback: boolean;
  holdMs: number;
}

const ROOMS = 10;
const USERS = 8;
const side = fc.constantFrom<Side>('user', 'company');
const room = fc.nat(ROOMS - 1);
const user = fc.nat(USERS - 1);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('msg' as const), room, side, n: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('read' as const), room, side }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('toggle' as const), room }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), room }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('insert' as const), room, user, company: user, uc: fc.nat(4), cc: fc.nat(4) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('reassign' as const), room, side, user }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('negative' as const), room }) },
);
const tx: fc.Arbitrary<Tx> = fc.record({
  ops: fc.array(op, { minLength: 1, maxLength: 4 }),
  end: fc.constantFrom<'commit' | 'rollback'>('commit', 'commit', 'commit', 'rollback'),
  savepointRollback: fc.boolean(),
  holdMs: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 5, max: 120 })),
});
const workload = fc.record({
  connections: fc.array(fc.array(tx, { minLength: 1, maxLength: 6 }), { minLength: 4, maxLength: 6 }),
  readers: fc.array(user, { maxLength: 10 }),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const mode of ['in-order delivery', 'duplicated and shuffled delivery'] as const) {
  describe(`property: Redis equals the database after concurrent history (${mode})`, () => {
    let db: TestDb;
    let r: TestRedis;
    let running: RunningBridge;

    beforeAll(async () => {
      db = await createTestDb();
      r = await createTestRedis();
      const interceptor =
        mode === 'duplicated and shuffled delivery'
          ? (rows: unknown[]) => {
              const out = [...rows, ...rows.filter(() => Math.random() < 0.3)];
              for (let i = out.length - 1; i > 0; i--) {
                const j = Math.floor(Math.random() * (i + 1));
                [out[i], out[j]] = [out[j], out[i]];
              }
              return out;
            }
          : undefined;
      running = startBridge(testConfig(db, r, { UNREAD_BATCH_SIZE: '7' }), testLogger(), {
        redis: r.redis,
        ...(interceptor ? { interceptor } : {}),
      });
    });
    afterAll(async () => {
      await running?.stop();
      await r?.cleanup();
      await db?.drop();
    });

    it('0 drifted users, every user checked', async () => {
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 10_000 });
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(workload, async (w) => {
          runs++;
          const users = Array.from({ length: USERS }, () => uuid());
          const rooms = Array.from({ length: ROOMS }, () => uuid());
          for (let i = 0; i < ROOMS; i++) {
            await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
                         values (${rooms[i]!}, ${users[i % USERS]!}, ${users[(i * 3 + 1) % USERS]!}, ${i % 3}, ${i % 2})`;
          }
          // Half the users are cached before the load, the rest hydrate while it runs.
          await Promise.all(users.slice(0, USERS / 2).map((u) => reader.getTotal(u)));

          const runOp = async (q: typeof db.sql, o: Op) => {
            const id = rooms[o.room]!;
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
                return q`insert into chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count)
                         values (${id}, ${users[o.user]!}, ${users[o.company]!}, ${o.uc}, ${o.cc}) on conflict (id) do nothing`;
              case 'reassign':
                return o.side === 'user'
                  ? q`update chat_rooms set user_id = ${users[o.user]!} where id = ${id}`
                  : q`update chat_rooms set company_id = ${users[o.user]!} where id = ${id}`;
              case 'negative':
                return q`update chat_rooms set user_unread_count = -1 where id = ${id}`;
            }
          };

          const connection = async (txs: Tx[]) => {
            for (const t of txs) {
              await db.sql
                .begin(async (q) => {
                  const [first, ...rest] = t.ops;
                  await runOp(q as unknown as typeof db.sql, first!);
                  if (t.savepointRollback) {
                    await q
                      .savepoint(async (sp) => {
                        for (const o of rest) await runOp(sp as unknown as typeof db.sql, o);
                        throw new Error('savepoint rolled back');
                      })
                      .catch(() => {});
                  } else {
                    for (const o of rest) await runOp(q as unknown as typeof db.sql, o);
                  }
                  if (t.holdMs > 0) await sleep(t.holdMs); // others commit meanwhile
                  if (t.end === 'rollback') throw new Error('rolled back');
                })
                // Deadlocks between random writers are real outcomes: the database rolled back.
                .catch(() => {});
            }
          };
          const readers = w.readers.map(async (k, i) => {
            await sleep(i * 7);
            await reader.getTotal(users[k]!);
          });
          await Promise.all([...w.connections.map(connection), ...readers]);

          await waitForBridge(db.sql);
          const bad = await drifted(db.sql, r.store, users);
          expect(bad).toEqual([]);
          // Not vacuous: the users cached before the load are still cached and were compared.
          for (const u of users.slice(0, USERS / 2)) expect(await r.store.read(u)).not.toBeNull();
          const t = await truth(db.sql);
          for (const u of users.slice(0, USERS / 2)) {
            expect((await r.store.read(u))?.total).toBe(Object.values(t[u] ?? {}).reduce((a, b) => a + b, 0));
          }
        }),
        { numRuns: Number(process.env.PROPERTY_RUNS ?? 12) },
      );
      expect(runs).toBeGreaterThan(0);
    });
  });
}
