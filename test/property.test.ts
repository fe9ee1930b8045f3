import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../src/read/reader.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { drifted, testConfig, testLogger, truth, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { extendedSchema, runConnection, seedRooms, workloadArbitrary } from './support/workload.js';
import { sleep } from '../src/sleep.js';

/**
 * The central correctness claim: whatever committed history of chat_rooms writes happens, from
 * several connections at once, with transactions held open while later ones commit, rollbacks,
 * savepoints and hydrations racing the stream, Redis ends equal to the truth computed by SQL.
 */

const ROOMS = 10;
const USERS = 8;
const workload = fc.record({
  // Extended: multi-row statements, id permutations, counts bumped by an app BEFORE trigger.
  connections: workloadArbitrary(ROOMS, USERS, 120, true),
  readers: fc.array(fc.nat(USERS - 1), { maxLength: 10 }),
});

/** The bridge's current source mode (unread_sync_source_mode), or null for the polling-only source. */
async function sourceMode(running: RunningBridge): Promise<string | null> {
  const text = await running.bridge.metrics.registry.metrics();
  return /^unread_sync_source_mode\{mode="(\w+)"\} 1$/m.exec(text)?.[1] ?? null;
}

// Both log sources: polling (UNREAD_SOURCE=postgres) and woken by logical decoding (auto here).
for (const [source, mode] of (['postgres', 'auto'] as const).flatMap((s) =>
  (['in-order delivery', 'duplicated and shuffled delivery'] as const).map((m) => [s, m] as const),
)) {
  describe(`property: Redis equals the database after concurrent history (UNREAD_SOURCE=${source}, ${mode})`, () => {
    const { db, r } = useEnv();
    let running: RunningBridge;

    beforeAll(async () => {
      await extendedSchema(db.sql);
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
      running = startBridge(testConfig(db, r, { UNREAD_BATCH_SIZE: '7', UNREAD_SOURCE: source }), testLogger(), {
        redis: r.redis,
        ...(interceptor ? { interceptor } : {}),
      });
      // Users are cached only after the bridge's first cycle (a first start forgets the cache).
      const started = Date.now() + 90_000;
      while (running.bridge.status().lastCycleAt === null && Date.now() < started) await sleep(20);
      if (source === 'auto') {
        // The histories below run on the stream, not on the polling it starts with.
        const deadline = Date.now() + 90_000;
        while ((await sourceMode(running)) !== 'logical' && Date.now() < deadline) await sleep(20);
      }
    });
    afterAll(async () => {
      await running?.stop();
    });

    it('0 drifted users, every user checked', async () => {
      const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 10_000 });
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(workload, async (w) => {
          runs++;
          const users = Array.from({ length: USERS }, () => uuid());
          const rooms = Array.from({ length: ROOMS }, () => uuid());
          await seedRooms(db.sql, rooms, users);
          // Half the users are cached before the load, the rest hydrate while it runs.
          await Promise.all(users.slice(0, USERS / 2).map((u) => reader.getTotal(u)));

          const readers = w.readers.map(async (k, i) => {
            await sleep(i * 7);
            await reader.getTotal(users[k]!);
          });
          await Promise.all([...w.connections.map((txs) => runConnection(db.sql, txs, rooms, users)), ...readers]);

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
      expect(await sourceMode(running)).toBe(source === 'auto' ? 'logical' : null);
    });
  });
}
