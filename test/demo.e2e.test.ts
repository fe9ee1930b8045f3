import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testConfig, testLogger, truth } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { socketConfig, startTestSocketServer, sum, testSecret } from './support/socket.js';
import { startDemo, type RunningDemo } from '../src/launch.js';
import { DEMO_ROOMS, DEMO_USERS, seedDemo } from '../src/demo/demo.js';
import { clearDemoBundleCache } from '../src/demo/page.js';
import type { RunningSocketServer } from '../src/socket/server.js';

const { db, r } = useEnv();
let demo: RunningDemo;
let server: RunningSocketServer;
let plain: RunningSocketServer;
let browser: Browser;

const truthTotal = async (userId: string) => sum((await truth(db.sql))[userId]);
const secret = testSecret();
const log = testLogger();

beforeAll(async () => {
  // The page's script is the bundled client library: rebuild it so the test runs today's src/client.
  execFileSync(process.execPath, ['scripts/bundle-client.mjs'], { stdio: 'inherit' });
  clearDemoBundleCache();
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
    await expect.poll(async () => Number(await page.getByTestId(`room-unread-${room.id}`).textContent()), { timeout: 15_000 }).toBe(0);
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

/** Collects CSP violations (the DOM event and the console report) and console errors of a page. */
async function watch(page: Page): Promise<{ csp: string[]; errors: string[] }> {
  const seen = { csp: [] as string[], errors: [] as string[] };
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) seen.csp.push(m.text());
    else if (m.type() === 'error') seen.errors.push(m.text());
  });
  page.on('pageerror', (err) => seen.errors.push(err.message));
  await page.exposeFunction('__cspViolation', (v: string) => seen.csp.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window as unknown as { __cspViolation(v: string): void }).__cspViolation(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  return seen;
}

it('is styled under its CSP, shows per-room counts live through the client, mark unread / mark all read; 390 px screenshot', async () => {
  const alice = DEMO_USERS[0]?.id as string;
  const mine = DEMO_ROOMS.filter((x) => x.userId === alice || x.companyId === alice);
  const [r1, r2] = mine as [(typeof DEMO_ROOMS)[number], (typeof DEMO_ROOMS)[number]];
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
  const seen = await watch(page);
  try {
    const res = await page.goto(`${server.url}/?user=${alice}`);
    expect(res?.headers()['content-security-policy']).not.toMatch(/unsafe-inline|unsafe-eval/);
    await expect.poll(async () => page.getByTestId('status').textContent(), { timeout: 15_000 }).toMatch(/connected as Alice/);

    // Styles applied: these values come only from the stylesheet.
    const style = await page.getByTestId('badge').evaluate((b) => {
      const cs = getComputedStyle(b);
      return { display: cs.display, radius: cs.borderTopLeftRadius, color: cs.color, body: getComputedStyle(document.body).fontFamily };
    });
    expect(style.display).toBe('flex'); // inline-flex, blockified inside the flex title row (unstyled: inline)
    expect(style.radius).toBe('999px');
    expect(style.body).toMatch(/system-ui/);
    // Readable on a phone: nothing wider than the 390 px viewport.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);

    const count = (id: string) => page.getByTestId(`room-unread-${id}`).textContent().then(Number);
    const truthRooms = async () => (await truth(db.sql))[alice] ?? {};
    const expectRooms = async () => {
      const t = await truthRooms();
      for (const r of mine) await expect.poll(() => count(r.id), { timeout: 15_000 }).toBe(t[r.id] ?? 0);
      await expect.poll(async () => Number(await page.getByTestId('badge').textContent()), { timeout: 15_000 }).toBe(sum(t));
    };
    await expectRooms();

    // Per-room counts follow each write, room by room.
    const before = (await truthRooms())[r2.id] ?? 0;
    await page.getByTestId(`send-to-me-${r2.id}`).click();
    await expect.poll(() => count(r2.id), { timeout: 15_000 }).toBe(before + 1);
    await page.getByTestId(`open-${r1.id}`).click();
    await expect.poll(() => count(r1.id), { timeout: 15_000 }).toBe(0);
    await page.getByTestId(`mark-unread-${r1.id}`).click();
    await expect.poll(() => count(r1.id), { timeout: 15_000 }).toBe(1);
    await expectRooms();
    await page.getByTestId(`send-to-me-${r1.id}`).click();
    await page.getByTestId(`send-to-me-${r1.id}`).click();
    await expect.poll(() => count(r1.id), { timeout: 15_000 }).toBe(3);
    await expectRooms();
    // The unread room is highlighted (a class the stylesheet paints).
    expect(await page.locator(`li[data-room="${r1.id}"]`).evaluate((li) => getComputedStyle(li).backgroundColor)).toBe(
      'rgb(248, 250, 255)',
    );

    const dir = resolve('test-artifacts');
    mkdirSync(dir, { recursive: true });
    const shot = resolve(dir, 'demo.png');
    await page.screenshot({ path: shot, fullPage: false });
    console.log(`demo screenshot (390x844): ${shot}`);

    await page.getByTestId('mark-all-read').click();
    for (const r of mine) await expect.poll(() => count(r.id), { timeout: 15_000 }).toBe(0);
    await expect.poll(async () => page.getByTestId('badge').textContent(), { timeout: 15_000 }).toBe('0');
    expect(sum(await truthRooms())).toBe(0);

    expect(seen.csp).toEqual([]);
    expect(seen.errors).toEqual([]);
  } finally {
    await page.close();
  }
});
