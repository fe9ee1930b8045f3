import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDb, createTestRedis, testConfig, testLogger, truth, type TestDb, type TestRedis } from './support/env.js';
import { socketConfig, startTestSocketServer, sum, testSecret } from './support/socket.js';
import { startDemo, type RunningDemo } from '../src/socket/run.js';
import { DEMO_ROOMS, DEMO_USERS, seedDemo } from '../src/socket/demo.js';
import type { RunningSocketServer } from '../src/socket/server.js';

let db: TestDb;
let r: TestRedis;
let demo: RunningDemo;
let server: RunningSocketServer;
let plain: RunningSocketServer;
let browser: Browser;

const truthTotal = async (userId: string) => sum((await truth(db.sql))[userId]);
const secret = testSecret();
const log = testLogger();

beforeAll(async () => {
  db = await createTestDb();
  r = await createTestRedis();
  await seedDemo(db.sql); // startDemo seeds again: seeding is idempotent
  // The same wiring as `unread-sync demo`.
  demo = await startDemo(testConfig(db, r), log, { PORT: '0', SUPABASE_JWT_SECRET: secret, LOG_LEVEL: 'silent' });
  server = demo.server;
  plain = await startTestSocketServer(socketConfig(r, secret), log);
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await plain?.close();
  await demo?.stop();
  await r?.cleanup();
  await db?.drop();
});

it('demo endpoints exist only in demo mode and validate ids', async () => {
  expect((await fetch(`${plain.url}/healthz`)).status).toBe(200);
  expect((await fetch(`${plain.url}/`)).status).toBe(404);
  const user = DEMO_USERS[0]?.id as string;
  const post = (base: string, path: string, body: unknown) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect((await post(plain.url, '/demo/token', { userId: user })).status).toBe(404);
  expect((await post(server.url, '/demo/token', { userId: user })).status).toBe(200);
  expect((await post(server.url, '/demo/token', { userId: 'nope' })).status).toBe(400);
  expect((await post(server.url, '/demo/token', { userId: '11111111-1111-4111-8111-111111111111' })).status).toBe(403);
  expect((await post(server.url, '/demo/open', { userId: user, roomId: "1' or '1'='1" })).status).toBe(400);
});

it('shows a live badge: send raises it, open room drops it to 0', async () => {
  const alice = DEMO_USERS[0]?.id as string;
  const demoRoom = DEMO_ROOMS.find((x) => x.userId === alice) as (typeof DEMO_ROOMS)[number];
  const before = (await truth(db.sql))[alice] ?? {};
  const room = { id: demoRoom.id, unreadBefore: before[demoRoom.id] ?? 0 };
  const page = await browser.newPage();
  try {
    await page.goto(`${server.url}/?user=${alice}`);
    const badge = page.getByTestId('badge');
    await expect.poll(async () => page.getByTestId('status').textContent(), { timeout: 15_000 }).toMatch(/connected as Alice/);
    await expect.poll(async () => Number(await badge.textContent()), { timeout: 15_000 }).not.toBeNaN();
    const total = await truthTotal(alice);
    await expect.poll(async () => Number(await badge.textContent()), { timeout: 15_000 }).toBe(total);

    await page.getByTestId(`send-to-me-${room.id}`).click();
    await expect.poll(async () => Number(await badge.textContent()), { timeout: 15_000 }).toBe(total + 1);
    await page.getByTestId(`send-to-me-${room.id}`).click();
    await expect.poll(async () => Number(await badge.textContent()), { timeout: 15_000 }).toBe(total + 2);

    await page.getByTestId(`open-${room.id}`).click();
    await expect
      .poll(async () => Number(await page.getByTestId(`room-unread-${room.id}`).textContent()), { timeout: 15_000 })
      .toBe(0);
    const after = await truthTotal(alice);
    expect(after).toBe(total - room.unreadBefore);
    await expect.poll(async () => Number(await badge.textContent()), { timeout: 15_000 }).toBe(after);

    // Open every room: the badge reaches 0.
    for (const r2 of DEMO_ROOMS.filter((x) => x.userId === alice || x.companyId === alice)) {
      await page.getByTestId(`open-${r2.id}`).click();
    }
    await expect.poll(async () => Number(await badge.textContent()), { timeout: 15_000 }).toBe(0);
  } finally {
    await page.close();
  }
});
