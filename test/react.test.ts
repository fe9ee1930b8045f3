import { JSDOM } from 'jsdom';
import { createElement } from 'react';
import type { Root } from 'react-dom/client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectUnreadBadges, type UnreadBadgesClient } from '../src/client/index.js';
import { useRoomUnread, useUnreadBadges } from '../src/react/index.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import type { RunningSocketServer } from '../src/socket/server.js';
import { testConfig, testLogger, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { socketConfig, startTestSocketServer, testSecret, token, until } from './support/socket.js';

/**
 * useUnreadBadges in a jsdom React tree, fed by the client library from a real socket server.
 * jsdom is installed as this file's DOM by hand rather than as the vitest environment: that
 * environment replaces the global URL class, and the server modules started here read their Lua
 * scripts through `new URL(..., import.meta.url)`.
 */
const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://localhost/' });
Object.assign(globalThis, {
  window: dom.window,
  document: dom.window.document,
  navigator: dom.window.navigator,
  IS_REACT_ACT_ENVIRONMENT: false,
});
// react-dom decides at load time whether a DOM exists: load it after the globals are in place.
const { createRoot } = await import('react-dom/client');

const { db, r } = useEnv();
let bridge: RunningBridge;
let server: RunningSocketServer;
const secret = testSecret();

beforeAll(async () => {
  bridge = startBridge(testConfig(db, r), testLogger());
  server = await startTestSocketServer(socketConfig(r, secret), testLogger());
});

afterAll(async () => {
  await server?.close();
  await bridge?.stop();
});

function Badge(props: { client: UnreadBadgesClient | null; roomId: string; renders: { n: number } }) {
  const s = useUnreadBadges(props.client);
  const room = useRoomUnread(props.client, props.roomId);
  props.renders.n++;
  return createElement(
    'div',
    null,
    createElement('span', { 'data-testid': 'total' }, s.ready ? String(s.total) : '…'),
    createElement('span', { 'data-testid': 'room' }, String(room)),
    createElement('span', { 'data-testid': 'rooms' }, String(s.unreadRooms)),
  );
}

it('re-renders with the live total and per-room count; null client renders the empty state', async () => {
  const a = uuid();
  const r1 = uuid();
  await db.sql`insert into public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
               values (${r1}, ${a}, ${uuid()}, 2, 0, true)`;
  const container = document.createElement('div');
  document.body.append(container);
  const root: Root = createRoot(container);
  const renders = { n: 0 };
  const text = (id: string) => container.querySelector(`[data-testid=${id}]`)?.textContent;

  // Updates arrive from the network as in an app, not inside act(): wait for the DOM instead.
  root.render(createElement(Badge, { client: null, roomId: r1, renders }));
  await until(() => text('total') === '…', 5_000, 'first render');
  expect(text('room')).toBe('0');

  const client = connectUnreadBadges({ url: server.url, getToken: () => token(secret, a), transports: ['websocket'] });
  try {
    root.render(createElement(Badge, { client, roomId: r1, renders }));
    await until(() => text('total') === '2', 15_000, 'initial total rendered');
    expect(text('room')).toBe('2');
    expect(text('rooms')).toBe('1');

    await db.sql`update public.chat_rooms set user_unread_count = 5 where id = ${r1}`;
    await until(() => text('room') === '5', 15_000, 'room count re-rendered');
    expect(text('total')).toBe('5');
    await db.sql`update public.chat_rooms set user_unread_count = 0 where id = ${r1}`;
    // Rooms may trail the total by one round trip on a server without per-room events: wait for both.
    await until(() => text('total') === '0' && text('room') === '0' && text('rooms') === '0', 15_000, 'read room re-rendered');

    // No render without a change: the snapshot is stable between events.
    const before = renders.n;
    await new Promise((res) => setTimeout(res, 300));
    expect(renders.n).toBe(before);
  } finally {
    root.unmount();
    client.close();
  }
});
