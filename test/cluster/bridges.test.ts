import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnreadReader } from '../../src/read/reader.js';
import { verify } from '../../src/commands/verify.js';
import { waitForBridge } from '../support/env.js';
import { useDb } from '../support/fixture.js';
import { bridgeEnv, exited, spawnCli } from '../support/processes.js';
import { startCluster, type LocalCluster } from './cluster.js';
import { clusterRedis, percentile, probe, sleep, type ClusterRedis } from './support.js';
import { seedWorld, steadyLoad } from '../support/load.js';

/**
 * Several bridge processes against one database and one Redis Cluster: one is active (Postgres
 * advisory lock), the others wait on the lock inside Postgres and take over when it is freed.
 */

type Bridge = ChildProcess & { output: () => string };

let cluster: LocalCluster;
const db = useDb();
let r: ClusterRedis;
let env: Record<string, string>;
const children: Bridge[] = [];

/** Alive, and its latest lifecycle line says it holds the lock (not that it stands by). */
const isActive = (b: Bridge) => {
  if (b.exitCode !== null || b.signalCode !== null) return false;
  const out = b.output();
  return out.lastIndexOf('postgres source active') > out.lastIndexOf('standing by');
};

/** Sessions holding an advisory lock in the test database: the active bridge's, and only it. */
async function lockHolders(): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`
    select count(*)::int as n from pg_locks
     where locktype = 'advisory' and granted and database = (select oid from pg_database where datname = current_database())`;
  return row?.n ?? 0;
}

async function spawnBridges(n: number): Promise<Bridge[]> {
  const list = Array.from({ length: n }, () => spawnCli(['bridge'], env));
  children.push(...list);
  const deadline = Date.now() + 30_000;
  while (!list.some(isActive)) {
    if (Date.now() > deadline) throw new Error(`no bridge became active:\n${list.map((b) => b.output()).join('\n')}`);
    await sleep(20);
  }
  // Standbys are up too (they logged that they are standing by), so they really compete.
  while (list.filter((b) => b.output().includes('standing by')).length < n - 1) {
    if (Date.now() > deadline) throw new Error('standby bridges did not start');
    await sleep(20);
  }
  return list;
}

async function stopAll(list: Bridge[]): Promise<void> {
  for (const b of list) if (b.exitCode === null && b.signalCode === null) b.kill('SIGTERM');
  await Promise.all(list.map((b) => exited(b)));
}

beforeAll(async () => {
  cluster = await startCluster(7111);
  r = clusterRedis(cluster.seeds);
  env = bridgeEnv(db.url, 'redis://127.0.0.1:6379', r.prefix, {
    REDIS_CLUSTER_NODES: cluster.seeds,
    LOG_LEVEL: 'info', // the tests read "postgres source active" / "standing by" from the logs
    UNREAD_BATCH_SIZE: '2000',
  });
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(children.map((c) => exited(c)));
  await r?.cleanup();
  await cluster?.stop();
});

describe('several bridges on a Redis Cluster', () => {
  let users: string[] = [];
  let rooms: string[] = [];

  it('throughput with 1, 2 and 3 bridges (burst of committed changes drained into the cluster)', async () => {
    ({ users, rooms } = await seedWorld(db.sql, 2_000, 6_000));
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 30_000 });
    const results: Array<{ bridges: number; changes: number; ms: number; perSecond: number }> = [];
    for (const n of [1, 2, 3]) {
      const list = await spawnBridges(n);
      // Every user cached, so each change is a real Lua apply on its user's master.
      for (let i = 0; i < users.length; i += 200) await Promise.all(users.slice(i, i + 200).map((u) => reader.getTotal(u)));
      await waitForBridge(db.sql);
      // Two bursts per bridge count; each is one transaction of 5 passes over every room, so all
      // its rows become visible to the bridge at once.
      for (let burst = 0; burst < 2; burst++) {
        const [before] = await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes`;
        await db.sql.begin(async (q) => {
          for (let pass = 0; pass < 5; pass++) {
            await q`update chat_rooms set user_unread_count = user_unread_count + 1, company_unread_count = company_unread_count + 1
                     where id = any(${rooms}::uuid[])`;
          }
        });
        const started = Date.now();
        await waitForBridge(db.sql, 'default', 120_000);
        const ms = Date.now() - started;
        const [after] = await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes`;
        const changes = (after?.n ?? 0) - (before?.n ?? 0);
        results.push({ bridges: n, changes, ms, perSecond: Math.round((changes / ms) * 1000) });
        expect(changes).toBeGreaterThan(50_000);
      }
      await stopAll(list);
    }
    console.log(`[cluster] bridge throughput: ${JSON.stringify(results)}`);
  });

  it('the active bridge SIGKILLed mid-load, twice: a standby takes over within a few seconds, 0 users drift', async () => {
    if (users.length === 0) ({ users, rooms } = await seedWorld(db.sql, 2_000, 6_000));
    const list = await spawnBridges(3);
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 30_000 });
    const p = await probe(db, r.store);
    await reader.getTotal(p.user);
    for (let i = 0; i < users.length; i += 200) await Promise.all(users.slice(i, i + 200).map((u) => reader.getTotal(u)));

    let done = false;
    const writing = steadyLoad(db.sql, rooms, 4, () => done);
    const takeovers: number[] = [];
    try {
      for (let kill = 0; kill < 2; kill++) {
        await sleep(1_000 + Math.random() * 500);
        const active = list.find(isActive);
        if (!active) throw new Error('no active bridge');
        active.kill('SIGKILL');
        const killedAt = Date.now();
        await exited(active);
        takeovers.push(await p.nextApplied(killedAt, 30_000));
        expect(await lockHolders()).toBe(1); // exactly one successor holds the lock
      }
      await sleep(1_000);
    } finally {
      done = true;
      await p.stop();
    }
    const written = await writing;
    expect(written).toBeGreaterThan(500);
    await waitForBridge(db.sql);
    const report = await verify({ sql: db.sql, store: r.store, bridgeName: 'default' });
    expect(report.drifted).toEqual([]);
    expect(report.checked).toBeGreaterThanOrEqual(users.length);
    expect((await Promise.all(users.map((u) => r.store.read(u)))).every(Boolean)).toBe(true);
    console.log(
      `[cluster] takeover after SIGKILL of the active bridge: ${takeovers.join(' ms, ')} ms (max ${percentile(takeovers, 100)} ms); ` +
        `${written} writes; ${report.checked} users verified, 0 drifted`,
    );
    for (const t of takeovers) expect(t).toBeLessThan(5_000);
    await stopAll(list);
  });
});
