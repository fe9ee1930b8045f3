import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { startBridge } from '../src/launch.js';
import { sleep } from '../src/sleep.js';
import { enableCapture, testConfig, uuid, waitForBridge } from './support/env.js';
import { useEnv } from './support/fixture.js';

const port = 20_000 + Math.floor(Math.random() * 1_000);
const get = async (path: string) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
};
const metric = (text: string, name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1]);

describe('capture triggers disabled (issue 10, point 3, bridge side)', () => {
  const { db, r } = useEnv();

  it('ALTER TABLE chat_rooms DISABLE TRIGGER ALL: /readyz fails with the reason, one error log per episode, a metric', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as { level: number; msg: string });
        done();
      },
    });
    const log = pino({ level: 'info' }, sink);
    const running = startBridge(testConfig(db, r, { UNREAD_METRICS_PORT: String(port), UNREAD_DB_CHECK_INTERVAL_MS: '20' }), log);
    try {
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${uuid()}, ${uuid()}, ${uuid()}, 1)`;
      await waitForBridge(db.sql);
      for (let i = 0; i < 100 && (await get('/readyz')).status !== 200; i++) await sleep(50);
      expect((await get('/readyz')).status).toBe(200);

      await db.sql`alter table chat_rooms disable trigger all`;
      let ready = await get('/readyz');
      for (let i = 0; i < 100 && ready.status === 200; i++) {
        await sleep(50);
        ready = await get('/readyz');
      }
      expect(ready.status).toBe(503);
      const body = JSON.parse(ready.text) as { checks: Record<string, string> };
      expect(body.checks.capture).toMatch(/capture triggers not firing: chat_rooms\.unread_sync_capture \(disabled\)/);
      await sleep(300); // many more checks run: still one error line for the episode
      const errors = () => lines.filter((l) => l.level === 50 && l.msg.includes('capture triggers not firing'));
      expect(errors()).toHaveLength(1);
      let m = (await get('/metrics')).text;
      expect(metric(m, 'unread_sync_capture_disabled_total')).toBe(1);
      expect(metric(m, 'unread_sync_capture_triggers_disabled')).toBeGreaterThanOrEqual(2);

      // A plain ENABLE is not enough: replica-role writes (restores) would still be missed.
      await db.sql`alter table chat_rooms enable trigger all`;
      for (let i = 0; i < 100 && !/origin only/.test(ready.text); i++) {
        await sleep(50);
        ready = await get('/readyz');
      }
      expect(ready.status).toBe(503);
      expect(ready.text).toMatch(/unread_sync_capture \(origin only: ENABLE instead of ENABLE ALWAYS\)/);
      await enableCapture(db.sql);
      for (let i = 0; i < 100 && (await get('/readyz')).status !== 200; i++) await sleep(50);
      expect((await get('/readyz')).status).toBe(200);
      m = (await get('/metrics')).text;
      expect(metric(m, 'unread_sync_capture_triggers_disabled')).toBe(0);
      // A second episode is logged and counted again.
      await db.sql`alter table chat_rooms disable trigger user`;
      for (let i = 0; i < 100 && errors().length < 2; i++) await sleep(50);
      expect(errors()).toHaveLength(2);
      expect(metric((await get('/metrics')).text, 'unread_sync_capture_disabled_total')).toBe(2);
      await enableCapture(db.sql);
      for (let i = 0; i < 100 && running.bridge.status().captureProblem !== null; i++) await sleep(50);
      expect(metric((await get('/metrics')).text, 'unread_sync_drift_repairs_total')).toBe(0);
    } finally {
      await running.stop();
    }
  });

  it('writes made while capture was off: once it fires again the bridge logs a reset by itself (no rebuild, no verifier repair)', async () => {
    const running = startBridge(
      testConfig(db, r, { UNREAD_DB_CHECK_INTERVAL_MS: '20', UNREAD_VERIFY_INTERVAL_MS: '20' }),
      pino({ level: 'silent' }),
      { redis: r.redis },
    );
    try {
      const [u, room] = [uuid(), uuid()];
      const resetsLogged = async () =>
        (await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes where kind = 'reset'`)[0]?.n;
      await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${uuid()}, 1)`;
      await waitForBridge(db.sql);
      // Counted once the bridge has checked capture: an episode a previous bridge left open (it
      // stopped before it saw the triggers fire again) is closed, with its reset, by that check.
      const before = await resetsLogged();
      running.bridge.requestHydration([u]);
      for (let i = 0; i < 100 && (await r.store.read(u)) === null; i++) await sleep(20);
      expect((await r.store.read(u))?.total).toBe(1);
      await db.sql`alter table chat_rooms disable trigger all`;
      for (let i = 0; i < 100 && running.bridge.status().captureProblem === null; i++) await sleep(20);
      await db.sql`update chat_rooms set user_unread_count = 40 where id = ${room}`; // not logged
      await sleep(200); // the verifier runs meanwhile: it must not be the mechanism
      await enableCapture(db.sql);
      for (let i = 0; i < 100 && running.bridge.status().captureProblem !== null; i++) await sleep(20);
      await waitForBridge(db.sql);
      expect(await resetsLogged()).toBe((before ?? 0) + 1);
      running.bridge.requestHydration([u]);
      for (let i = 0; i < 100 && (await r.store.read(u))?.total !== 40; i++) await sleep(20);
      expect((await r.store.read(u))?.total).toBe(40);
      expect((await running.bridge.metrics.driftRepairs.get()).values[0]?.value ?? 0).toBe(0);
    } finally {
      await running.stop();
    }
  });
});
