import { Redis } from 'ioredis';
import type { Sql } from '../../src/db.js';
import { UnreadReader } from '../../src/reader.js';
import { UnreadStore } from '../../src/store/store.js';
import { verify } from '../../src/verify.js';
import { drifted, uuid, waitForBridge } from '../support/env.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    ...results.map((r) => `| ${r.scenario}${r.note ? ` (${r.note})` : ''} | ${r.written} | ${r.faults} | ${r.drifted} | ${r.convergeMs} ms |`),
  ];
  console.log(`\nFault suite\n${lines.join('\n')}\n`);
}

export async function seedWorld(sql: Sql, users = 40, rooms = 200) {
  const ids = Array.from({ length: users }, () => uuid());
  const roomIds = Array.from({ length: rooms }, () => uuid());
  const rows = roomIds.map((id, i) => ({ id, user_id: ids[i % users], company_id: ids[(i * 7 + 3) % users], user_unread_count: i % 3, company_unread_count: 0 }));
  // Chunks: one statement takes at most 65,534 parameters.
  for (let i = 0; i < rows.length; i += 5_000) await sql`insert into chat_rooms ${sql(rows.slice(i, i + 5_000))}`;
  return { users: ids, rooms: roomIds };
}

/** Steady writes from several connections; errors (a restarting server) are retried, not counted. */
export function steadyLoad(sql: Sql, rooms: string[], connections: number, stop: () => boolean) {
  let written = 0;
  const worker = async () => {
    while (!stop()) {
      const id = rooms[Math.floor(Math.random() * rooms.length)]!;
      const roll = Math.random();
      try {
        if (roll < 0.7) await sql`update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${id}`;
        else if (roll < 0.85) await sql`update chat_rooms set company_unread_count = company_unread_count + 1 where id = ${id}`;
        else if (roll < 0.95) await sql`update chat_rooms set user_unread_count = 0 where id = ${id}`;
        else await sql`update chat_rooms set is_active = not is_active where id = ${id}`;
        written++;
      } catch {
        await sleep(50);
      }
    }
  };
  return Promise.all(Array.from({ length: connections }, worker)).then(() => written);
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
