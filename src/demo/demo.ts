import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import type { SeedCompatChatSocket } from '../compat/seed-compat.js';
import { queries, type SqlClient } from '../db.js';
import { ErrorCode, UnreadSyncError, type ErrorCode as Code } from '../errors.js';
import { uuidSchema } from '../ids.js';
import { mintToken } from '../socket/auth.js';
import { sendJson } from '../socket/http.js';
import { DEMO_CSP, DEMO_PAGE, serveDemoAsset } from './page.js';

export interface DemoUser {
  id: string;
  name: string;
  kind: 'user' | 'company';
}

export interface DemoRoom {
  id: string;
  userId: string;
  companyId: string;
}

// Deterministic ids so the demo is reproducible and re-seeding is idempotent.
export const DEMO_USERS: readonly DemoUser[] = [
  { id: '00000000-0000-4000-8000-00000000a11c', name: 'Alice', kind: 'user' },
  { id: '00000000-0000-4000-8000-000000000b0b', name: 'Bob', kind: 'user' },
  { id: '00000000-0000-4000-8000-00000000ac3e', name: 'Acme Corp', kind: 'company' },
  { id: '00000000-0000-4000-8000-0000000061b0', name: 'Globex', kind: 'company' },
];

const [alice, bob, acme, globex] = DEMO_USERS.map((u) => u.id) as [string, string, string, string];

export const DEMO_ROOMS: readonly DemoRoom[] = [
  { id: '00000000-0000-4000-9000-000000000001', userId: alice, companyId: acme },
  { id: '00000000-0000-4000-9000-000000000002', userId: alice, companyId: globex },
  { id: '00000000-0000-4000-9000-000000000003', userId: bob, companyId: acme },
  { id: '00000000-0000-4000-9000-000000000004', userId: bob, companyId: globex },
];

/** Inserts (or resets) the demo users' rooms, with a few unread messages to start from. */
export async function seedDemo(sql: SqlClient): Promise<{ users: readonly DemoUser[]; rooms: readonly DemoRoom[] }> {
  await queries.seedDemoRooms(
    sql,
    DEMO_ROOMS.map((r, i) => ({ ...r, userUnread: i % 2, companyUnread: (i + 1) % 3 })),
  );
  return { users: DEMO_USERS, rooms: DEMO_ROOMS };
}

const tokenBody = z.object({ userId: uuidSchema });
const sendBody = z.object({ roomId: uuidSchema, senderId: uuidSchema, receiverId: uuidSchema, message: z.string().max(500).optional() });
const openBody = z.object({ roomId: uuidSchema, userId: uuidSchema });
// Room ids are opaque strings; the adapter validates them again and lets Postgres type them.
const roomIdSchema = z.string().min(1).max(128);
const markUnreadBody = z.object({ userId: uuidSchema, roomId: roomIdSchema, count: z.number().int().min(1).max(1000).optional() });
const markReadBody = z.object({ userId: uuidSchema, roomId: roomIdSchema });
const readAllBody = z.object({ userId: uuidSchema });

/** A short label per demo room, from the other side's name. */
function roomTitle(room: DemoRoom, forUser: string): string {
  const other = room.userId === forUser ? room.companyId : room.userId;
  return DEMO_USERS.find((u) => u.id === other)?.name ?? other;
}

const MAX_BODY = 4096;

async function readJson(req: IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, 'body too large');
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new HttpError(400, 'body must be JSON');
  }
}

const STATUS_CODES: Record<number, Code> = { 400: ErrorCode.INVALID_INPUT, 403: ErrorCode.FORBIDDEN, 413: ErrorCode.INVALID_INPUT };

/** A refused demo request: `status` is the HTTP answer, `message` is safe to send. */
class HttpError extends UnreadSyncError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(STATUS_CODES[status] ?? ErrorCode.INVALID_INPUT, message);
  }
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new HttpError(400, r.error.issues.map((i) => `${i.path.join('.') || 'body'} ${i.message}`).join('; '));
  }
  return r.data;
}

const isDemoUser = (id: string) => DEMO_USERS.some((u) => u.id === id);

function demoUsersOnly(...ids: string[]): void {
  if (!ids.every(isDemoUser)) throw new HttpError(403, 'demo users only');
}

type DemoWrite = { refused: number; run: (body: unknown, chat: SeedCompatChatSocket) => Promise<{ ok: boolean }> };

/** A demo write: its body, the demo users it acts for, the adapter call, the status when it did nothing. */
function demoWrite<B>(
  schema: z.ZodType<B>,
  usersOf: (b: B) => string[],
  write: (chat: SeedCompatChatSocket, b: B) => Promise<{ ok: boolean }>,
  refused = 404,
): DemoWrite {
  return {
    refused,
    run: async (body, chat) => {
      const b = parse(schema, body);
      demoUsersOnly(...usersOf(b));
      return write(chat, b);
    },
  };
}

const DEMO_WRITES = new Map<string, DemoWrite>([
  [
    '/demo/send',
    demoWrite(
      sendBody,
      (b) => [b.senderId, b.receiverId],
      (chat, b) =>
        chat.notifyRoomUpdate(b.senderId, b.receiverId, b.roomId, {
          roomId: b.roomId,
          senderId: b.senderId,
          message: b.message ?? 'hello',
        }),
    ),
  ],
  [
    '/demo/mark-unread',
    demoWrite(
      markUnreadBody,
      (b) => [b.userId],
      (chat, b) => chat.markRoomUnread(b.userId, b.roomId, b.count ?? 1),
    ),
  ],
  [
    '/demo/mark-read',
    demoWrite(
      markReadBody,
      (b) => [b.userId],
      (chat, b) => chat.markRoomRead(b.userId, b.roomId),
    ),
  ],
  [
    '/demo/read-all',
    demoWrite(
      readAllBody,
      (b) => [b.userId],
      (chat, b) => chat.markAllRead(b.userId),
      400,
    ),
  ],
  [
    '/demo/open',
    demoWrite(
      openBody,
      (b) => [b.userId],
      (chat, b) => chat.resetUnreadCountOnJoin(b.userId, b.roomId),
    ),
  ],
]);

/**
 * Demo-only routes; returns false when the request is not one of them. Only demo users can get
 * tokens, so turning demo mode on never lets anyone impersonate a real user.
 */
export async function handleDemoRequest(
  req: IncomingMessage,
  res: ServerResponse,
  deps: { jwtSecret: string; audience: string; chat: SeedCompatChatSocket },
): Promise<boolean> {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  try {
    if (serveDemoAsset(req, res)) return true;
    if (req.method === 'GET' && (path === '/' || path === '/demo')) {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
        'content-security-policy': DEMO_CSP,
      });
      res.end(DEMO_PAGE);
      return true;
    }
    if (req.method === 'GET' && path === '/demo/users') {
      sendJson(res, 200, { users: DEMO_USERS, rooms: DEMO_ROOMS });
      return true;
    }
    if (req.method === 'GET' && path === '/demo/rooms') {
      const userId = parse(uuidSchema, new URL(req.url ?? '/', 'http://x').searchParams.get('userId') ?? '');
      demoUsersOnly(userId);
      const rooms = DEMO_ROOMS.filter((r) => r.userId === userId || r.companyId === userId).map((r) => ({
        id: r.id,
        title: roomTitle(r, userId),
      }));
      sendJson(res, 200, { ok: true, rooms });
      return true;
    }
    if (req.method !== 'POST' || !path.startsWith('/demo/')) return false;
    const body = await readJson(req);
    if (path === '/demo/token') {
      const { userId } = parse(tokenBody, body);
      if (!isDemoUser(userId)) throw new HttpError(403, 'tokens are minted for demo users only');
      const token = await mintToken(deps.jwtSecret, userId, { expiresInSeconds: 600, audience: deps.audience });
      sendJson(res, 200, { token, expiresInSeconds: 600 });
      return true;
    }
    const write = DEMO_WRITES.get(path);
    if (write) {
      const r = await write.run(body, deps.chat);
      sendJson(res, r.ok ? 200 : write.refused, r);
      return true;
    }
    return false;
  } catch (err) {
    if (err instanceof HttpError) sendJson(res, err.status, { error: err.message });
    else sendJson(res, 500, { error: 'internal error' });
    return true;
  }
}
