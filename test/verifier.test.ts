import { describe, expect, it } from 'vitest';
import { testConfig, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { steppedBridge } from './support/bridge.js';

describe('periodic verifier in the bridge', () => {
  const { db, r } = useEnv({ redis: { db: 4 } }); // own keyspace: the rolling scan walks all of it

  it('walks every cached user, finds nothing in normal operation, repairs and counts injected drift', async () => {
    const stepper = await steppedBridge(testConfig(db, r), r, undefined, { verifyIntervalMs: 1, verifySampleSize: 5 });
    try {
      const users = Array.from({ length: 12 }, () => uuid());
      await db.sql`insert into chat_rooms ${db.sql(users.map((u, i) => ({ id: uuid(), user_id: u, company_id: uuid(), user_unread_count: i + 1 })))}`;
      await stepper.hydrate(users);
      const value = async (name: 'verifiedUsers' | 'driftRepairs') => (await stepper.bridge.metrics[name].get()).values[0]?.value ?? 0;
      // Enough cycles for the rolling scan to pass every user at least once.
      for (let i = 0; i < 12; i++) {
        await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1 where user_id = ${users[i]!}`;
        await new Promise((res) => setTimeout(res, 2));
        await stepper.bridge.runOnce();
      }
      expect(await value('verifiedUsers')).toBeGreaterThanOrEqual(users.length);
      expect(await value('driftRepairs')).toBe(0);

      // Drift that only a bug (or a hand edit) could cause.
      await r.redis.hset(r.store.keys.user(users[3]!), 't', '999');
      for (let i = 0; i < 12 && (await value('driftRepairs')) === 0; i++) {
        await new Promise((res) => setTimeout(res, 2));
        await stepper.bridge.runOnce();
      }
      expect(await value('driftRepairs')).toBe(1);
      expect((await r.store.read(users[3]!))?.total).toBe(5);
    } finally {
      await stepper.stop();
    }
  });
});
