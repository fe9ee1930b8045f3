import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { queries } from '../src/db.js';
import { expectNoDrift, testConfig, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { steppedBridge } from './support/bridge.js';
import { holdAgedTransaction } from './support/load.js';

describe('gap detection covers every pruned, unapplied row (issue 10, point 8)', () => {
  const { db, r } = useEnv();

  it('two gaps in a row: the second one has an older xid than the first and is still seen', async () => {
    const [u, r1, r2] = [uuid(), uuid(), uuid()];
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values
                  (${r1}, ${u}, ${uuid()}, 1), (${r2}, ${u}, ${uuid()}, 0)`;
    const bridge = await steppedBridge(testConfig(db, r, { UNREAD_VERIFY_INTERVAL_MS: '0' }), r, undefined, { verifyIntervalMs: 1 });
    const longTx = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await bridge.hydrate([u]);
      expect((await r.store.read(u))?.total).toBe(1);
      const resets = async () => (await bridge.bridge.metrics.resets.get()).values[0]?.value ?? 0;
      const firstStart = await resets(); // the first start counts as one

      // A transaction opened now (older xid) and left open past the log's retention.
      const held = await holdAgedTransaction(longTx, r2, 5);

      // Gap 1: a later change is pruned before the bridge read it.
      await db.sql`update chat_rooms set user_unread_count = 7 where id = ${r1}`;
      await db.sql`update unread_sync.changes set created_at = now() - interval '10 days'`;
      expect(await queries.prune(db.sql, 0, 86_400)).toBeGreaterThan(0);
      await bridge.drain();
      expect(await resets()).toBe(firstStart + 1);
      await bridge.hydrate([u]);
      expect((await r.store.read(u))?.total).toBe(7); // the open transaction is not visible yet

      // Gap 2: the long transaction commits and its rows are pruned before the bridge reads them.
      await held.commit();
      expect(await queries.prune(db.sql, 0, 86_400)).toBeGreaterThan(0);
      await bridge.drain();
      expect(await resets()).toBe(firstStart + 2);
      expect(await r.store.read(u)).toBeNull(); // never the stale 7
      await bridge.hydrate([u]);
      expect((await r.store.read(u))?.total).toBe(12);
      await expectNoDrift(db.sql, r.store, [u]);
      // The periodic verifier ran every cycle and was never the mechanism.
      expect((await bridge.bridge.metrics.driftRepairs.get()).values[0]?.value ?? 0).toBe(0);
    } finally {
      await longTx.end({ timeout: 5 });
      await bridge.stop();
    }
  });
});
