import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { ErrorReply, UnreadCountsReply } from '../src/socket/badges.js';
import { testLogger, uuid } from './support/env.js';
import { useRedis } from './support/fixture.js';
import {
  connectClient,
  socketConfig,
  spawnSocketServer,
  startTestSocketServer,
  testSecret,
  token,
  type BadgeClient,
} from './support/socket.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

describe('get-unread-counts: per-socket rate limit and bounded cost', () => {
  const r = useRedis();

  it('answers excess requests with an error at once, and refills over time', async () => {
    const secret = testSecret();
    const server = await startTestSocketServer(socketConfig(r, secret), testLogger());
    const user = uuid();
    await r.store.hydrate(new Map([[user, [{ roomId: uuid(), unread: 2 }]]]));
    const c = await connectClient(server.url, { token: await token(secret, user) }, user);
    try {
      const replies = (await Promise.all(Array.from({ length: 40 }, () => c.socket.timeout(5_000).emitWithAck('get-unread-counts')))) as (
        | UnreadCountsReply
        | ErrorReply
      )[];
      const ok = replies.filter((x) => !('error' in x));
      const limited = replies.filter((x) => 'error' in x && x.error.startsWith('rate limited'));
      // Burst 10, at most 2 reads in flight: most of the 40 are refused, none waits in a queue.
      expect(ok.length).toBeGreaterThanOrEqual(2);
      expect(ok.length).toBeLessThanOrEqual(12);
      expect(ok.length + limited.length).toBe(40);
      expect((ok[0] as UnreadCountsReply).totalUnreadCount).toBe(2);
      await new Promise((res) => setTimeout(res, 1_100)); // refill: 5 per second
      const again = (await c.socket.timeout(5_000).emitWithAck('get-unread-counts')) as UnreadCountsReply;
      expect(again.totalUnreadCount).toBe(2);
    } finally {
      c.close();
      await server.close();
    }
  });

  it('an empty hydrated user (e.g. a random id) expires; a real change makes it permanent', async () => {
    const [ghost, real] = [uuid(), uuid()];
    await r.store.hydrate(
      new Map([
        [ghost, []],
        [real, []],
      ]),
    );
    const ttl = await r.redis.pttl(r.store.keys.user(ghost));
    expect(ttl).toBeGreaterThan(3_500_000);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
    await r.store.apply(new Map([[real, [{ roomId: uuid(), unread: 1, version: '5' }]]]));
    expect(await r.redis.pttl(r.store.keys.user(real))).toBe(-1);
    expect((await r.store.read(real))?.total).toBe(1);
    // A user with unread rooms never expires.
    const busy = uuid();
    await r.store.hydrate(new Map([[busy, [{ roomId: uuid(), unread: 3 }]]]));
    expect(await r.redis.pttl(r.store.keys.user(busy))).toBe(-1);
  });

  it("one socket's flood keeps another user's badge latency within 2x and the server's memory bounded", async () => {
    const secret = testSecret();
    const server = await spawnSocketServer({
      REDIS_URL: r.url,
      UNREAD_KEY_PREFIX: r.prefix,
      SUPABASE_JWT_SECRET: secret,
      PORT: '0',
      UNREAD_SOCKET_COALESCE_MS: '0',
      UNREAD_SOCKET_RECONCILE_MS: '0',
      LOG_LEVEL: 'error',
    });
    const [flooder, victim, room] = [uuid(), uuid(), uuid()];
    await r.store.hydrate(
      new Map([
        [flooder, [{ roomId: uuid(), unread: 1 }]],
        [victim, [{ roomId: room, unread: 1 }]],
      ]),
    );
    const b: BadgeClient = await connectClient(server.url, { token: await token(secret, victim) }, victim);
    let version = 1;
    // Badge latency: a change applied to Redis (as the bridge does) until the victim's socket has it.
    const sample = async (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const unread = 100 + (version % 1000);
        const arrived = new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('victim badge did not arrive within 10 s')), 10_000);
          const on = (p: { totalUnreadCount: number }) => {
            if (p.totalUnreadCount !== unread) return;
            clearTimeout(timer);
            b.socket.off('total-unread-count-updated', on);
            resolve(performance.now());
          };
          b.socket.on('total-unread-count-updated', on);
        });
        const started = performance.now();
        await r.store.apply(new Map([[victim, [{ roomId: room, unread, version: String(++version) }]]]));
        out.push((await arrived) - started);
        await new Promise((res) => setTimeout(res, 20));
      }
      return out;
    };
    try {
      await sample(10); // warm-up
      const rssBefore = rssMb(server.pid);
      // At the lowest CPU priority: on a 2-core machine a flooder at normal priority would slow
      // everything by taking a core, which says nothing about the server. It still sends as fast
      // as the server reads whenever a core is idle.
      const flood = spawn(
        'nice',
        ['-n', '19', process.execPath, '--import', 'tsx', fileURLToPath(new URL('./support/flood-client.ts', import.meta.url))],
        {
          env: { ...process.env, FLOOD_URL: server.url, FLOOD_TOKEN: await token(secret, flooder) },
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      let floodOut = '';
      flood.stdout.on('data', (d: Buffer) => (floodOut += d.toString()));
      const floodDone = new Promise((res) => flood.once('exit', res));
      await new Promise((res) => setTimeout(res, 2_500)); // tsx start-up and ramp
      // Flooded and quiet rounds alternate (the flooder is paused with SIGSTOP), so whatever else
      // loads the machine weighs on both sides alike; medians of many samples each.
      const loaded: number[] = [];
      const unloaded: number[] = [];
      let rssDuring = 0;
      for (let round = 0; round < 8; round++) {
        loaded.push(...(await sample(8)));
        rssDuring = Math.max(rssDuring, rssMb(server.pid));
        flood.kill('SIGSTOP');
        await new Promise((res) => setTimeout(res, 300)); // let the server drain what was sent
        unloaded.push(...(await sample(8)));
        flood.kill('SIGCONT');
        await new Promise((res) => setTimeout(res, 300));
      }
      flood.kill('SIGTERM');
      await floodDone;
      const stats = JSON.parse(floodOut.trim().split('\n').at(-1)!) as { sent: number; ok: number; limited: number; disconnects: number };
      const [quiet, flooded] = [median(unloaded), median(loaded)];
      console.log(
        `victim badge latency median of ${loaded.length}: quiet ${quiet.toFixed(2)} ms, during flood ${flooded.toFixed(2)} ms; ` +
          `flood sent ${stats.sent}, answered ${stats.ok}, rate limited ${stats.limited}, disconnected ${stats.disconnects}x; ` +
          `server RSS ${rssBefore.toFixed(0)} -> max ${rssDuring.toFixed(0)} MB`,
      );
      expect(stats.sent).toBeGreaterThan(1_000); // it was a flood
      expect(stats.limited).toBeGreaterThan(stats.ok * 5); // nearly all refused
      expect(flooded).toBeLessThanOrEqual(2 * quiet);
      expect(rssDuring - rssBefore).toBeLessThan(150);
    } finally {
      b.close();
      await server.stop();
    }
  });
});
