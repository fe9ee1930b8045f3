/**
 * Issue 13, goal 3: log maintenance never stalls the bridge. Prune runs on its own timer and
 * connection beside the cycles, and the checkpoint is written beside them too, fenced by the
 * session that holds the bridge lock, so an ousted bridge's late write cannot move it.
 */
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { PostgresSource } from '../src/sources/postgres.js';
import { SourceLeaseLostError } from '../src/sources/source.js';
import { Bridge } from '../src/bridge/bridge.js';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge } from '../src/launch.js';
import { queries } from '../src/db.js';
import { testConfig, testLogger, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';

async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('log maintenance beside the apply loop (issue 13, goal 3)', () => {
  const { db, r } = useEnv();

  it('while a large prune is running (held on a row lock), changes and hydrations still reach Redis and the checkpoint moves', async () => {
    const [u, room] = [uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${uuid()}, 1)`;
    // 30,000 old log rows (3 prune batches), committed before the bridge's first start: applied.
    await db.sql`
      insert into unread_sync.changes (user_id, room_id, unread, created_at)
      select gen_random_uuid(), g::text, 1, now() - interval '2 hours' + g * interval '1 ms'
        from generate_series(1, 30000) g`;
    // Another session locks the oldest of them: the prune's first batch waits on it, so a prune is
    // running, deterministically, for as long as this transaction stays open.
    const holder = postgres(db.url, { max: 1, onnotice: () => {} });
    let release!: () => void;
    const released = new Promise<void>((res) => (release = res));
    let locked!: () => void;
    const isLocked = new Promise<void>((res) => (locked = res));
    const holding = holder.begin(async (tx) => {
      await tx`select 1 from unread_sync.changes order by created_at limit 1 for update`;
      locked();
      await released;
    });
    await isLocked;

    const running = startBridge(
      testConfig(db, r, {
        UNREAD_PRUNE_INTERVAL_MS: '1000',
        UNREAD_LOG_MIN_AGE_S: '0',
        UNREAD_CHECKPOINT_INTERVAL_MS: '50',
        UNREAD_VERIFY_INTERVAL_MS: '0',
      }),
      testLogger(),
      { redis: r.redis },
    );
    const pruneWaiting = async () => {
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
         where datname = current_database() and application_name = 'unread-sync bridge (maintenance)'
           and wait_event_type = 'Lock' and query like '%unread_sync.prune%'`;
      return (row?.n ?? 0) > 0;
    };
    const oldRows = async () =>
      (await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes where created_at < now() - interval '1 hour'`)[0]
        ?.n ?? -1;
    try {
      await until('the prune to wait on the locked row', pruneWaiting);
      // A hydration and a change, both applied while that prune runs.
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 60_000 });
      expect(await reader.getTotal(u)).toBe(1);
      await db.sql`update chat_rooms set user_unread_count = 5 where id = ${room}`;
      await until('the change in Redis', async () => (await r.store.read(u))?.total === 5);
      // ...and checkpointed (written beside the cycles, not behind the prune).
      await waitForBridge(db.sql, 'default', 60_000);
      // The prune was running the whole time: still waiting, nothing deleted yet.
      expect(await pruneWaiting(), 'the prune is still waiting').toBe(true);
      expect(await oldRows(), 'nothing pruned yet').toBe(30_000);

      release();
      await holding;
      // Once the lock is gone the same round deletes every applied old row, batch after batch.
      await until('the prune to finish', async () => (await oldRows()) === 0);
      await db.sql`update chat_rooms set user_unread_count = 6 where id = ${room}`;
      await until('the next change in Redis', async () => (await r.store.read(u))?.total === 6);
    } finally {
      release();
      await holding.catch(() => {});
      await holder.end({ timeout: 5 });
      await running.stop();
    }
  });

  it("an ousted bridge's late checkpoint is refused, and its next cycle stops", async () => {
    const config = testConfig(db, r, { UNREAD_BRIDGE_NAME: 'ousted' });
    const log = testLogger();
    const sourceOf = (checkpointIntervalMs: number) =>
      new PostgresSource({
        databaseUrl: db.url,
        bridgeName: 'ousted',
        batchSize: config.batchSize,
        // A timer that never fires in this test: the ousted bridge's position stays unsaved.
        checkpointIntervalMs,
        pollMinMs: config.pollMinMs,
        logMinAgeSeconds: config.logMinAgeSeconds,
        logMaxAgeSeconds: config.logMaxAgeSeconds,
        log,
      });
    const checkpoint = async () =>
      (await db.sql<{ snapshot: string }[]>`select snapshot::text as snapshot from unread_sync.bridge_state where name = 'ousted'`)[0]
        ?.snapshot;
    const [u, room] = [uuid(), uuid()];
    const a = sourceOf(3_600_000);
    const b = sourceOf(0);
    const bridgeA = new Bridge({ source: a, store: r.store, log });
    const bridgeB = new Bridge({ source: b, store: r.store, log });
    try {
      await a.start(new AbortController().signal);
      await bridgeA.runOnce(); // the first cycle (a cache reset) saves its position at once
      expect(await a.saveCheckpoint()).toBe(true);
      const first = await checkpoint();
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${uuid()}, 1)`;
      expect(await bridgeA.runOnce()).toBe(1);
      expect(await checkpoint()).toBe(first); // A's position moved; its checkpoint is not written yet

      // A is ousted: its lock session ends (a network partition, a killed backend) while A itself
      // lives on; B takes the lock, starts from the saved checkpoint and moves past A.
      const [lockSession] = await db.sql<{ pid: number }[]>`
        select pid from pg_stat_activity where datname = current_database() and application_name = 'unread-sync bridge (lock)'`;
      await db.sql`select pg_terminate_backend(${lockSession!.pid})`;
      await b.start(new AbortController().signal);
      await db.sql`update chat_rooms set user_unread_count = 2 where id = ${room}`;
      expect(await bridgeB.runOnce()).toBeGreaterThanOrEqual(1);
      const bs = await checkpoint();
      expect(bs).not.toBe(first);

      // A's late write (its timer, or its stop) is refused: the position stays B's.
      expect(await a.saveCheckpoint()).toBe(false);
      expect(await checkpoint()).toBe(bs);
      // A's next cycle fails instead of reading on (its bridge then restarts and stands by).
      await expect(bridgeA.runOnce()).rejects.toBeInstanceOf(SourceLeaseLostError);
      // B's own writes still go through: the fence names the session that holds the lock.
      expect(await b.saveCheckpoint()).toBe(true);
      expect(await queries.readCheckpoint(db.sql, 'ousted')).toBe(bs);
    } finally {
      bridgeA.dispose();
      bridgeB.dispose();
      await a.stop().catch(() => {});
      await b.stop();
    }
  });
});
