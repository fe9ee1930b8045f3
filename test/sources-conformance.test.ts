/**
 * ChangeSource conformance: the same lifecycle tests against every source, driven through the
 * interface alone (start, cycle, waitForChanges, stop) with a recording handler, no bridge.
 * Real Postgres; the Supabase source through the stand-in Realtime server.
 *
 * Duplicates: the Supabase source may hand a change over twice (live, then again by the catch-up
 * that covers it); the bridge's versions make that harmless, so the order assertions look at the
 * first delivery of each change. A position a source saved is never delivered again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { LogicalSource } from '../src/sources/logical.js';
import { PostgresSource } from '../src/sources/postgres.js';
import { SourceLeaseLostError, type ChangeSource, type CycleHandler } from '../src/sources/source.js';
import { SupabaseSource } from '../src/sources/supabase.js';
import { startRealtimeForDb, type RealtimeServer } from './support/realtime-server.js';
import { createTestDb, testLogger, uuid, type TestDb } from './support/env.js';

const JWT_SECRET = 'unread-sync-test-secret-with-at-least-32-characters';

let db: TestDb;
let server: RealtimeServer;
let serviceKey: string;

interface Delivered {
  id: string;
  room_id?: string;
  unread?: number;
}

interface Subject {
  kind: string;
  make(bridgeName: string): ChangeSource;
  /** Until the source's live path (if any) is up: the Realtime topics joined, the logical stream open. */
  ready(source: ChangeSource): Promise<void>;
  /** Another holder takes the bridge name away from the running source (a partition, an expired lease). */
  oust(bridgeName: string): Promise<void>;
  /** Undoes oust() so the name is free again. */
  release(bridgeName: string): Promise<void>;
}

const common = {
  batchSize: 500,
  logMinAgeSeconds: 3600,
  logMaxAgeSeconds: 7 * 86400,
};

/** The postgres sources' lock session is ended: its reconnected session no longer holds the lock. */
async function terminateLockSession(): Promise<void> {
  await db.sql`
    select pg_terminate_backend(l.pid) from pg_locks l
    where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database where datname = current_database())`;
}

const postgresOptions = (bridgeName: string) => ({
  ...common,
  databaseUrl: db.url,
  bridgeName,
  // The final checkpoint is the one stop() writes.
  checkpointIntervalMs: 60_000,
  pollMinMs: 20,
  log: testLogger(),
});

const subjects: Subject[] = [
  {
    kind: 'postgres (polling)',
    make: (bridgeName) => new PostgresSource(postgresOptions(bridgeName)),
    ready: async () => {},
    oust: terminateLockSession,
    release: async () => {},
  },
  {
    kind: 'logical',
    make: (bridgeName) => new LogicalSource({ ...postgresOptions(bridgeName), mode: 'logical' }),
    ready: (source) => waitFor(() => (source as LogicalSource).mode === 'logical', 'logical stream open'),
    oust: terminateLockSession,
    release: async () => {},
  },
  {
    kind: 'supabase',
    make: (bridgeName) =>
      new SupabaseSource({
        ...common,
        supabaseUrl: server.url,
        serviceRoleKey: serviceKey,
        databaseUrl: db.url,
        bridgeName,
        shards: 2,
        catchupIntervalMs: 1_000,
        leaseTtlMs: 1_500,
        log: testLogger(),
        backoffBaseMs: 100,
        backoffMaxMs: 1_000,
        realtime: { timeout: 3_000 },
      }),
    ready: (source) => waitFor(() => (source as SupabaseSource).subscribedAll(), 'every bridge topic joined'),
    oust: async (bridgeName) => {
      await db.sql`update unread_sync.bridge_lease set holder = 'intruder', expires_at = now() + interval '1 hour' where name = ${bridgeName}`;
    },
    release: async (bridgeName) => {
      await db.sql`delete from unread_sync.bridge_lease where name = ${bridgeName}`;
    },
  },
];

async function waitFor(cond: () => boolean | Promise<boolean>, label: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${label}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** A handler that records every cycle's gap flag and every event handed over. */
function recorder() {
  const events: Delivered[] = [];
  const gaps: boolean[] = [];
  const handler: CycleHandler = {
    begin: async ({ gap }) => {
      gaps.push(gap);
    },
    chunk: async (rows) => {
      for (const row of rows) events.push(row as Delivered);
    },
    end: async () => {},
  };
  const of = (room: string): number[] => events.filter((e) => e.room_id === room).map((e) => Number(e.unread));
  return { events, gaps, handler, of };
}

type Recorder = ReturnType<typeof recorder>;

/** Cycles (waiting for changes between) until `done`. */
async function runUntil(source: ChangeSource, rec: Recorder, done: () => boolean, label: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  const signal = new AbortController().signal;
  for (;;) {
    await source.cycle([], rec.handler);
    if (done()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${label}`);
    await source.waitForChanges(200, signal);
  }
}

/**
 * A cycle asked to hydrate a user reads the log up to now (the Supabase source runs a catch-up,
 * which is what saves its position): after it, everything committed before is covered.
 */
async function settle(source: ChangeSource, rec: Recorder): Promise<void> {
  await source.cycle([uuid()], rec.handler);
}

async function newRoom(unread: number): Promise<string> {
  const room = uuid();
  await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${uuid()}, ${uuid()}, ${unread})`;
  return room;
}

const setUnread = (room: string, unread: number) => db.sql`update chat_rooms set user_unread_count = ${unread} where id = ${room}`;

/** First delivery of each value, in delivery order. */
const firsts = (values: number[]): number[] => values.filter((v, i) => values.indexOf(v) === i);

beforeAll(async () => {
  db = await createTestDb({ migrate: false, prefix: 'srcconf' });
  ({ server, serviceKey } = await startRealtimeForDb(db.url, JWT_SECRET));
}, 60_000);

afterAll(async () => {
  await server?.close();
  await db?.drop();
}, 60_000);

for (const subject of subjects) {
  describe(`ChangeSource conformance: ${subject.kind}`, () => {
    const names: string[] = [];
    const started: ChangeSource[] = [];
    /** A bridge name of its own per test: checkpoints, locks and leases are per name. */
    const fresh = (): string => {
      const name = `conf-${subject.kind.split(' ')[0]}-${names.length}`;
      names.push(name);
      return name;
    };
    const start = async (name: string): Promise<ChangeSource> => {
      const source = subject.make(name);
      started.push(source);
      await source.start(new AbortController().signal);
      await subject.ready(source);
      return source;
    };

    afterAll(async () => {
      for (const s of started) await s.stop().catch(() => {});
    }, 60_000);

    it('a first start (no checkpoint) reports a gap and delivers only changes committed after it', async () => {
      const before = await newRoom(1);
      await setUnread(before, 2);
      const name = fresh();
      const source = await start(name);
      const rec = recorder();
      await setUnread(before, 3);
      const after = await newRoom(7);
      await runUntil(source, rec, () => rec.of(after).includes(7) && rec.of(before).includes(3), 'the changes after start');
      await settle(source, rec);
      expect(rec.gaps[0]).toBe(true);
      expect(rec.gaps.slice(1)).not.toContain(true);
      expect(new Set(rec.of(before))).toEqual(new Set([3]));
      await source.stop();
    });

    it('delivers committed changes only, each room in commit order', async () => {
      const source = await start(fresh());
      const rec = recorder();
      await runUntil(source, rec, () => true, 'the first cycle');
      const room = await newRoom(0);
      const held = await newRoom(0);
      // An open transaction: its change must wait for its commit, and must not hold up the others.
      const reserved = await db.sql.reserve();
      try {
        await reserved`begin`;
        await reserved`update chat_rooms set user_unread_count = 99 where id = ${held}`;
        for (let n = 1; n <= 5; n++) await setUnread(room, n);
        await runUntil(source, rec, () => rec.of(room).includes(5), 'five committed updates');
        await settle(source, rec);
        expect(rec.of(held)).not.toContain(99);
        await reserved`commit`;
      } finally {
        reserved.release();
      }
      await runUntil(source, rec, () => rec.of(held).includes(99), 'the held update once committed');
      expect(firsts(rec.of(room).filter((v) => v > 0))).toEqual([1, 2, 3, 4, 5]);
      await source.stop();
    });

    it('resumes from its saved checkpoint after stop/start: nothing lost, nothing it covered delivered again', async () => {
      const name = fresh();
      const first = await start(name);
      const room = await newRoom(0);
      const rec1 = recorder();
      await setUnread(room, 1);
      await runUntil(first, rec1, () => rec1.of(room).includes(1), 'the update before stop');
      await settle(first, rec1);
      await first.stop();

      await setUnread(room, 2);
      const second = await start(name);
      const rec2 = recorder();
      await setUnread(room, 3);
      await runUntil(second, rec2, () => rec2.of(room).includes(3), 'the update after restart');
      await settle(second, rec2);
      expect(rec2.gaps).not.toContain(true);
      expect(rec2.of(room)).toContain(2);
      expect(rec2.of(room)).not.toContain(1);
      expect(firsts(rec2.of(room))).toEqual([2, 3]);
      await second.stop();
    });

    it('stop() ends cleanly: its connections close and the name is free at once', async () => {
      const name = fresh();
      const source = await start(name);
      const rec = recorder();
      await runUntil(source, rec, () => true, 'a cycle');
      const t0 = Date.now();
      await source.stop();
      expect(Date.now() - t0).toBeLessThan(10_000);
      await waitFor(
        async () => {
          const [row] = await db.sql<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
          where datname = current_database() and application_name like 'unread-sync bridge%'`;
          return row!.n === 0;
        },
        'the source connections closed',
        10_000,
      );
      // Lock or lease released: the next instance does not stand by.
      const next = subject.make(name);
      started.push(next);
      const t1 = Date.now();
      await next.start(new AbortController().signal);
      expect(Date.now() - t1).toBeLessThan(3_000);
      await next.stop();
    });

    it('one instance per bridge name: a second stands by until the first stops; an ousted one fails with SourceLeaseLostError', async () => {
      const name = fresh();
      const first = await start(name);
      const second = subject.make(name);
      started.push(second);
      let secondStarted = false;
      const standby = new AbortController();
      const starting = second.start(standby.signal).then(() => {
        secondStarted = true;
      });
      await new Promise((res) => setTimeout(res, 1_500));
      expect(secondStarted).toBe(false);
      await first.stop();
      await starting;
      expect(secondStarted).toBe(true);

      // The active one loses the name: its cycles fail with the one lease-lost error from then on.
      // (The postgres sources' first cycle on the killed lock session may fail with that
      // connection's own error instead; the bridge restarts on any error, so both end the same.)
      await subject.oust(name);
      const rec = recorder();
      const attempt = () =>
        second.cycle([], rec.handler).then(
          () => null,
          (err: unknown) => err,
        );
      let failure: unknown = null;
      await waitFor(async () => {
        failure = await attempt();
        if (failure !== null && !(failure instanceof SourceLeaseLostError)) {
          expect((failure as NodeJS.ErrnoException).code).toMatch(/^(ECONNRESET|57P01)$/);
          failure = null;
        }
        return failure !== null;
      }, 'the ousted source to fail with SourceLeaseLostError');
      expect((failure as SourceLeaseLostError).code).toBe(ErrorCode.SOURCE_LEASE_LOST);
      expect(await attempt()).toBeInstanceOf(SourceLeaseLostError);
      await second.stop();
      await subject.release(name);
    });
  });
}
