import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../../src/read/reader.js';
import { startBridge, type RunningBridge } from '../../src/launch.js';
import { verify } from '../../src/commands/verify.js';
import { expectNoDrift, testLogger, truth, uuid, waitForBridge } from '../support/env.js';
import { useDb } from '../support/fixture.js';
import { runConnection, seedRooms, workloadArbitrary } from '../support/workload.js';
import { startCluster, type LocalCluster } from './cluster.js';
import { clusterConfig, clusterRedis, probe, sleep, type ClusterRedis } from './support.js';
import { seedWorld, steadyLoad } from '../support/load.js';

/**
 * The core claim on a real Redis Cluster: concurrent committed history ends with Redis equal to
 * the SQL truth, and a master SIGKILLed mid-load (its replica promoted) loses nothing.
 */

const ROOMS = 12;
const USERS = 10;
const workload = workloadArbitrary(ROOMS, USERS, 80);

let cluster: LocalCluster;
const db = useDb();
let r: ClusterRedis;
let running: RunningBridge;

beforeAll(async () => {
  cluster = await startCluster(7101);
  r = clusterRedis(cluster.seeds);
  // The bridge builds its own cluster client from REDIS_CLUSTER_NODES, as in production.
  running = startBridge(clusterConfig(db, cluster.seeds, r.prefix, { UNREAD_BATCH_SIZE: '50' }), testLogger());
});

afterAll(async () => {
  await running?.stop();
  await r?.cleanup();
  await cluster?.stop();
});

describe('Redis Cluster (3 masters, 3 replicas)', () => {
  it('property: concurrent history from several connections, 0 drifted users, every user checked', async () => {
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(workload, async (connections) => {
        runs++;
        const users = Array.from({ length: USERS }, () => uuid());
        const rooms = Array.from({ length: ROOMS }, () => uuid());
        await seedRooms(db.sql, rooms, users);
        // Half cached before the load, the rest hydrate while it runs (hydration races the stream).
        await Promise.all(users.slice(0, USERS / 2).map((u) => reader.getTotal(u)));
        const late = users.slice(USERS / 2).map(async (u, i) => {
          await sleep(i * 9);
          await reader.getTotal(u);
        });
        await Promise.all([...connections.map((txs) => runConnection(db.sql, txs, rooms, users)), ...late]);
        await waitForBridge(db.sql);
        await expectNoDrift(db.sql, r.store, users);
        // Not vacuous: every user is cached (they live in different slots, so on different masters).
        const cached = await Promise.all(users.map((u) => r.store.read(u)));
        expect(cached.every(Boolean)).toBe(true);
        const t = await truth(db.sql);
        users.forEach((u, i) => {
          expect(cached[i]?.total).toBe(Object.values(t[u] ?? {}).reduce((a, b) => a + b, 0));
        });
      }),
      { numRuns: Number(process.env.CLUSTER_PROPERTY_RUNS ?? 6) },
    );
    expect(runs).toBeGreaterThan(0);
    // Users really were spread over the masters.
    const perMaster = await Promise.all(r.redis.nodes('master').map((n) => n.dbsize()));
    expect(perMaster.filter((n) => n > 0).length).toBe(3);
  });

  it('slots resharded between masters mid-load (ASK, TRYAGAIN, MOVED): 0 users drift', async () => {
    const { users, rooms } = await seedWorld(db.sql, 400, 1_200);
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
    await Promise.all(users.map((u) => reader.getTotal(u)));
    let done = false;
    const writing = steadyLoad(db.sql, rooms, 4, () => done);
    // Readers keep reading (and hydrating after forgets) while slots move.
    const reading = (async () => {
      while (!done) {
        await reader.getTotal(users[Math.floor(Math.random() * users.length)]!).catch(() => {});
        await sleep(2);
      }
    })();
    let moved: Awaited<ReturnType<LocalCluster['reshard']>>;
    try {
      await sleep(500);
      moved = await cluster.reshard(3_000);
      await sleep(500);
    } finally {
      done = true;
    }
    const [written] = await Promise.all([writing, reading]);
    expect(written).toBeGreaterThan(200);
    await waitForBridge(db.sql);
    const report = await verify({ sql: db.sql, store: r.store, bridgeName: 'default' });
    expect(report.drifted).toEqual([]);
    expect(report.checked).toBeGreaterThanOrEqual(users.length);
    expect((await Promise.all(users.map((u) => r.store.read(u)))).every(Boolean)).toBe(true);
    console.log(
      `[cluster] resharded 3000 slots ${moved.from} -> ${moved.to} in ${moved.ms} ms under load; ` +
        `${written} writes; ${report.checked} users verified, 0 drifted`,
    );
  });

  it('a master SIGKILLed mid-load: its replica takes over and 0 users drift', async () => {
    const { users, rooms } = await seedWorld(db.sql, 300, 900);
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 15_000 });
    const p = await probe(db, r.store);
    await Promise.all([...users, p.user].map((u) => reader.getTotal(u)));

    let done = false;
    const writing = steadyLoad(db.sql, rooms, 4, () => done);
    let failover: Awaited<ReturnType<LocalCluster['killMaster']>>;
    let recoveryMs: number;
    try {
      await sleep(1_500);
      // Kill the master that holds the probe user: "next applied change" is measured on the shard that failed.
      const slot = (await r.redis.cluster('KEYSLOT', r.store.keys.user(p.user))) as number;
      const owner = r.redis.slots[slot]?.[0];
      const killedAt = Date.now();
      failover = await cluster.killMaster(owner ? { port: Number(owner.split(':')[1]) } : {});
      recoveryMs = await p.nextApplied(killedAt);
      await sleep(1_500); // load goes on against the promoted replica
    } finally {
      done = true;
      await p.stop();
    }
    const written = await writing;
    expect(written).toBeGreaterThan(500);
    await waitForBridge(db.sql);

    // Every user is read again (anything lost would rehydrate, but nothing should be lost).
    const before = await Promise.all(users.map((u) => r.store.read(u)));
    const missing = before.filter((c) => c === null).length;
    await Promise.all(users.map((u) => reader.getTotal(u)));
    const report = await verify({ sql: db.sql, store: r.store, bridgeName: 'default' });
    expect(report.drifted).toEqual([]);
    expect(report.checked).toBeGreaterThanOrEqual(users.length);
    expect((await Promise.all(users.map((u) => r.store.read(u)))).every(Boolean)).toBe(true);
    expect(missing).toBe(0); // replicated before acknowledged: the failover lost no user
    console.log(
      `[cluster] master ${failover.port} killed, replica ${failover.promoted} promoted after ${failover.failoverMs} ms; ` +
        `next change applied ${recoveryMs} ms after the kill; ${written} writes during the run; ${report.checked} users verified, 0 drifted`,
    );
  });
});
