/**
 * Micro-benchmark behind the read-path finding: the same Redis, 32 concurrent callers, four
 * ways to read one small hash. Usage: npx tsx bench/micro-read.ts [redisUrl]
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { UnreadReader } from '../src/read/reader.js';
import { UnreadStore } from '../src/store/store.js';
import { closedLoop } from './lib.js';

const url = process.argv[2] ?? 'redis://127.0.0.1:6379';
const prefix = 'bench:micro:';
const users = Array.from({ length: 5_000 }, () => randomUUID());
const setup = new Redis(url);
for (let i = 0; i < users.length; i += 500) {
  const p = setup.pipeline();
  for (const u of users.slice(i, i + 500)) {
    p.hset(`${prefix}u:{${u}}`, { t: 7, n: 2, s: 123456789, total: 7 });
  }
  await p.exec();
}
let k = 0;
const pick = () => users[k++ % users.length] as string;
const cases: Array<[string, (r: Redis) => () => Promise<unknown>]> = [
  ['redis.hget(total)', (r) => () => r.hget(`${prefix}u:{${pick()}}`, 'total')],
  ['redis.hmget(t,n,s)', (r) => () => r.hmget(`${prefix}u:{${pick()}}`, 't', 'n', 's')],
  [
    'store.readTotals',
    (r) => {
      const s = new UnreadStore(r, prefix);
      return () => s.readTotals(pick());
    },
  ],
  [
    'reader.getTotals',
    (r) => {
      const rd = new UnreadReader(new UnreadStore(r, prefix));
      return () => rd.getTotals(pick());
    },
  ],
];
for (let round = 0; round < 2; round++) {
  for (const [name, make] of cases) {
    const r = new Redis(url, { enableAutoPipelining: true });
    const op = make(r);
    await closedLoop(32, 300, op);
    const res = await closedLoop(32, 2_000, op);
    console.log(
      `round ${round} ${name.padEnd(20)} ${res.opsPerSec.toFixed(0).padStart(7)} ops/s  p50 ${res.latency.p50.toFixed(3)} p99 ${res.latency.p99.toFixed(3)} ms`,
    );
    r.disconnect();
  }
}
const keys = users.map((u) => `${prefix}u:{${u}}`);
for (let i = 0; i < keys.length; i += 1000) await setup.unlink(...keys.slice(i, i + 1000));
setup.disconnect();
