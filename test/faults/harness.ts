import { Redis } from 'ioredis';
import type { Sql } from '../../src/db.js';
import { UnreadReader } from '../../src/read/reader.js';
import { UnreadStore } from '../../src/store/store.js';
import { verify } from '../../src/commands/verify.js';
import { drifted, waitForBridge } from '../support/env.js';
export { sleep } from '../../src/sleep.js';

export { seedWorld, steadyLoad } from '../support/load.js';

export interface FaultRow {
  scenario: string;
  written: number;
  faults: number;
  drifted: number;
  convergeMs: number;
  note?: string;
}

export const results: FaultRow[] = [];

export function printTable(): void {
  const lines = [
    '| scenario | changes written | faults injected | drifted users | time to converge |',
    '|---|---:|---:|---:|---:|',
    ...results.map(
      (r) => `| ${r.scenario}${r.note ? ` (${r.note})` : ''} | ${r.written} | ${r.faults} | ${r.drifted} | ${r.convergeMs} ms |`,
    ),
  ];
  console.log(`\nFault suite\n${lines.join('\n')}\n`);
}

/**
 * After the load: every user is read (hydrated if unknown), the bridge catches up, and every user
 * is compared with the truth computed by SQL, then by `verify`. Returns drifted users and the time.
 */
export async function converge(sql: Sql, redisUrl: string, prefix: string, users: string[], started = Date.now()) {
  const redis = new Redis(redisUrl, { enableAutoPipelining: true });
  try {
    const store = new UnreadStore(redis, prefix);
    const reader = new UnreadReader(store, { hydrateTimeoutMs: 30_000 });
    await Promise.all(users.map((u) => reader.getTotal(u)));
    await waitForBridge(sql, 'default', 120_000);
    const bad = await drifted(sql, store, users);
    const cached = (await Promise.all(users.map((u) => store.read(u)))).filter(Boolean).length;
    if (cached !== users.length) throw new Error(`only ${cached}/${users.length} users cached: comparison would be vacuous`);
    const report = await verify({ sql, store, bridgeName: 'default', userIds: users });
    return { drifted: new Set([...bad, ...report.drifted.map((d) => d.userId)]).size, convergeMs: Date.now() - started };
  } finally {
    redis.disconnect();
  }
}
