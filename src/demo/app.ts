// The demo page's script (browser only; bundled by scripts/bundle-client.mjs into dist/browser/demo-app.js).
// All socket work goes through the client library: this file only renders its state and calls the demo endpoints.
import { connectUnreadBadges, type UnreadBadgesClient, type UnreadState } from '../client/index.js';

interface User {
  id: string;
  name: string;
  kind: 'user' | 'company';
}
interface Room {
  id: string;
  userId: string;
  companyId: string;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

let users: User[] = [];
let rooms: Room[] = [];
let me = '';
let client: UnreadBadgesClient | null = null;
let unsubscribe: (() => void) | null = null;

const name = (id: string) => users.find((u) => u.id === id)?.name ?? id.slice(0, 8);
const initials = (s: string) =>
  s
    .split(/\s+/)
    .map((w) => w[0] ?? '')
    .join('')
    .slice(0, 2)
    .toUpperCase();

function status(text: string, kind: 'ok' | 'wait' | 'error' = 'ok'): void {
  const s = $('status');
  s.textContent = text;
  s.className = `status ${kind}`;
}

async function post(path: string, body: unknown): Promise<void> {
  const r = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const reply = (await r.json().catch(() => ({}))) as { error?: string };
  if (!r.ok) status(`${path}: ${reply.error ?? r.status}`, 'error');
}

function myRooms(): Room[] {
  return rooms.filter((r) => r.userId === me || r.companyId === me);
}

/** Builds the room list once per user; state changes only update counts in place. */
function buildList(): void {
  const list = $('rooms');
  list.textContent = '';
  for (const [i, r] of myRooms().entries()) {
    const other = r.userId === me ? r.companyId : r.userId;
    const li = el('li', 'room');
    li.dataset.room = r.id;
    const avatar = el('div', `avatar av-${i % 6}`, initials(name(other)));
    avatar.setAttribute('aria-hidden', 'true');
    const body = el('div', 'body');
    const top = el('div', 'line');
    top.append(el('span', 'name', name(other)));
    const count = el('span', 'count zero', '0');
    count.dataset.testid = `room-unread-${r.id}`;
    count.setAttribute('aria-label', 'unread messages');
    top.append(count);
    const preview = el('div', 'preview', 'No new messages');
    preview.dataset.role = 'preview';
    const actions = el('div', 'actions');
    const button = (label: string, testid: string, cls: string, fn: () => Promise<void>, title = label) => {
      const b = el('button', cls, label);
      b.type = 'button';
      b.title = title;
      b.dataset.testid = testid;
      b.addEventListener('click', () => void fn());
      actions.append(b);
    };
    button(
      '+1 message',
      `send-to-me-${r.id}`,
      'btn',
      () => post('/demo/send', { roomId: r.id, senderId: other, receiverId: me }),
      `${name(other)} sends you a message`,
    );
    button(
      'Reply',
      `send-to-other-${r.id}`,
      'btn',
      () => post('/demo/send', { roomId: r.id, senderId: me, receiverId: other }),
      `You send ${name(other)} a message (their badge goes up)`,
    );
    button('Mark unread', `mark-unread-${r.id}`, 'btn', () => post('/demo/mark-unread', { userId: me, roomId: r.id }));
    button('Open', `open-${r.id}`, 'btn primary', () => post('/demo/open', { roomId: r.id, userId: me }));
    body.append(top, preview, actions);
    li.append(avatar, body);
    list.append(li);
  }
}

function render(s: UnreadState): void {
  const badge = $('badge');
  badge.textContent = s.seq === 0 ? '–' : String(s.total);
  badge.className = `badge${s.total === 0 ? ' zero' : ''}`;
  $('rooms-count').textContent = s.seq === 0 ? '' : s.unreadRooms === 1 ? '1 chat with unread' : `${s.unreadRooms} chats with unread`;
  for (const li of Array.from($('rooms').querySelectorAll<HTMLLIElement>('li.room'))) {
    const n = s.rooms[li.dataset.room ?? ''] ?? 0;
    const count = li.querySelector('.count') as HTMLElement;
    count.textContent = String(n);
    count.className = `count${n === 0 ? ' zero' : ''}`;
    li.classList.toggle('unread', n > 0);
    (li.querySelector('[data-role=preview]') as HTMLElement).textContent =
      n === 0 ? 'No new messages' : n === 1 ? '1 new message' : `${n} new messages`;
  }
  if (s.ready) status(`connected as ${name(me)} · live`, 'ok');
  else status(s.seq === 0 ? 'connecting…' : 'reconnecting… (showing the last state)', 'wait');
}

function switchTo(userId: string): void {
  unsubscribe?.();
  client?.close();
  me = userId;
  buildList();
  client = connectUnreadBadges({
    url: location.origin,
    transports: ['websocket'],
    getToken: async () => {
      const r = await fetch('/demo/token', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId }),
      });
      if (!r.ok) throw new Error(`token: HTTP ${r.status}`);
      return ((await r.json()) as { token: string }).token;
    },
    onError: (err) => status(err.message, 'error'),
  });
  unsubscribe = client.subscribe(render);
}

async function main(): Promise<void> {
  const d = (await (await fetch('/demo/users')).json()) as { users: User[]; rooms: Room[] };
  users = d.users;
  rooms = d.rooms;
  const sel = $<HTMLSelectElement>('user');
  for (const u of users) {
    const o = el('option', undefined, `${u.name} (${u.kind})`);
    o.value = u.id;
    sel.append(o);
  }
  sel.addEventListener('change', () => switchTo(sel.value));
  $('read-all').addEventListener('click', () => void post('/demo/read-all', { userId: me }));
  const wanted = new URLSearchParams(location.search).get('user');
  if (wanted && users.some((u) => u.id === wanted)) sel.value = wanted;
  switchTo(sel.value);
}

void main().catch((err: unknown) => status(`demo failed to start: ${(err as Error).message}`, 'error'));
