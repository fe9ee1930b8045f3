/**
 * Issue 10, case 8 on the Supabase transport: the catch-up (unread_sync.read_changes) detects a gap
 * per bridge, like the embedded source. Two gaps in a row, the second with an older xid than the
 * first (a transaction held open past the log's retention): the second is seen and reset, never
 * served stale. Realtime drops every broadcast here (dropRate 1), so the log is the only record.
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Bridge } from '../src/bridge/bridge.js';
import { queries } from '../src/db.js';
import { SupabaseSource } from '../src/sources/supabase.js';
import { prepareRealtimeDb, signTestJwt, startRealtimeServer, type RealtimeServer } from './support/realtime-server.js';
import { expectNoDrift, testLogger, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { holdAgedTransaction } from './support/load.js';

const JWT_SECRET = 'unread-sync-test-secret-with-at-least-32-characters';

const { db, r } = useEnv({ db: { migrate: false, prefix: 'sbgap' } });
let server: RealtimeServer;

beforeAll(async () => {
  await prepareRealtimeDb(db.url);
  server = await startRealtimeServer({ databaseUrl: db.url, jwtSecret: JWT_SECRET });
}, 60_000);

afterAll(async () => {
  await server?.close();
}, 60_000);

describe('supabase catch-up: gaps per bridge (issue 10, point 8)', () => {
  it('two gaps in a row: the second one has an older xid than the first and is still seen', async () => {
    const [u, r1, r2] = [uuid(), uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values
                  (${r1}, ${u}, ${uuid()}, 1), (${r2}, ${u}, ${uuid()}, 0)`;
    server.faults.dropRate = 1; // Realtime loses everything: only the catch-up can know
    const log = testLogger();
    const source = new SupabaseSource({
      supabaseUrl: server.url,
      serviceRoleKey: await signTestJwt(JWT_SECRET, { role: 'service_role' }),
      databaseUrl: db.url,
      bridgeName: 'default',
      shards: 2,
      catchupIntervalMs: 0, // every cycle is a catch-up
      batchSize: 500,
      logMinAgeSeconds: 3600,
      logMaxAgeSeconds: 7 * 86400,
      log,
      backoffBaseMs: 100,
      backoffMaxMs: 1_000,
      realtime: { timeout: 3_000 },
    });
    const controller = new AbortController();
    await source.start(controller.signal);
    const bridge = new Bridge({ source, store: r.store, log, verifyIntervalMs: 1 });
    const hydrate = async () => {
      bridge.requestHydration([u]);
      await bridge.runOnce();
    };
    const resets = async () => (await bridge.metrics.resets.get()).values[0]?.value ?? 0;
    const longTx = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await hydrate();
      expect((await r.store.read(u))?.total).toBe(1);
      const firstStart = await resets();

      // A transaction opened now (older xid) and left open past the log's retention.
      const held = await holdAgedTransaction(longTx, r2, 5);

      // Gap 1: a later change is pruned before the catch-up read it.
      await db.sql`update chat_rooms set user_unread_count = 7 where id = ${r1}`;
      await db.sql`update unread_sync.changes set created_at = now() - interval '10 days'`;
      expect(await queries.prune(db.sql, 0, 86_400)).toBeGreaterThan(0);
      await bridge.runOnce();
      expect(await resets()).toBe(firstStart + 1);
      await hydrate();
      expect((await r.store.read(u))?.total).toBe(7); // the open transaction is not visible yet

      // Gap 2: the long transaction commits and its rows are pruned before the catch-up reads
      // them. The global record (newest pruned xid) is older news to this checkpoint; only the
      // bridge's own record (bridge_state.lost_xid) says the checkpoint never saw these rows.
      await held.commit();
      expect(await queries.prune(db.sql, 0, 86_400)).toBeGreaterThan(0);
      await bridge.runOnce();
      expect(await resets()).toBe(firstStart + 2);
      expect(await r.store.read(u)).toBeNull(); // never the stale 7
      await hydrate();
      expect((await r.store.read(u))?.total).toBe(12);
      await expectNoDrift(db.sql, r.store, [u]);
      expect((await bridge.metrics.driftRepairs.get()).values[0]?.value ?? 0).toBe(0);
    } finally {
      server.faults.reset();
      await longTx.end({ timeout: 5 });
      bridge.dispose();
      controller.abort();
      await source.stop();
    }
  });
});
