import { queries, type SqlClient } from '../db.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseUserId, ROOM_ID_MAX_LENGTH, roomIdSchema } from '../ids.js';
import type { BadgeTotals } from '../store/store.js';
import type { UnreadBadges } from '../socket/badges.js';

export type { SqlClient };

export class RoomNotFoundError extends UnreadSyncError {
  constructor(roomId: string, userId: string) {
    super(ErrorCode.ROOM_NOT_FOUND, `chat room ${roomId} does not exist or ${userId} is not one of its members`);
  }
}

export interface SeedCompatOptions {
  log?: Logger | undefined;
  /**
   * The seed logged and swallowed errors; keep that by default so existing callers that do not
   * catch cannot crash the process. Set true to get rejections instead.
   */
  throwOnError?: boolean | undefined;
  /** The seed's push step, if the host app has one. */
  sendChatPushNotification?: ((senderId: string, receiverId: string, message: unknown) => Promise<void> | void) | undefined;
}

/** What a write did: the receiver's new unread count in the room, or why nothing was written. */
export type WriteResult = { ok: true; roomId: string; userId: string; unread: number } | { ok: false; error: string };

/** What markAllRead did: how many rooms it set to 0, or why nothing was written. */
export type MarkAllResult = { ok: true; userId: string; rooms: number } | { ok: false; error: string };

/** Highest count markRoomUnread accepts (chat_rooms counts are int4; a badge never needs more). */
export const MAX_MARK_UNREAD = 1_000_000;

export class InvalidInputError extends UnreadSyncError {
  constructor(message: string) {
    super(ErrorCode.INVALID_INPUT, message);
  }
}

/**
 * Room ids are opaque (uuid, bigint, integer or text columns): checked for shape by the same rule
 * as the change log's (roomIdSchema), sent as an untyped parameter so Postgres reads it as the
 * column's type; a value the column cannot hold is refused by Postgres (22P02) as an invalid id.
 */
function parseRoomId(value: unknown): string {
  const r = roomIdSchema.safeParse(value);
  if (r.success) return r.data;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
  throw new InvalidInputError(`room id must be a non-empty string of at most ${ROOM_ID_MAX_LENGTH} printable characters, got ${shown}`);
}

function parseCount(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_MARK_UNREAD) {
    throw new InvalidInputError(`count must be an integer from 1 to ${MAX_MARK_UNREAD}, got ${String(value).slice(0, 40)}`);
  }
  return value;
}

/** Postgres could not read the room id as the column's type (or it is out of its range). */
const badIdCode = (err: unknown) => {
  const code = (err as { code?: unknown }).code;
  return code === '22P02' || code === '22003';
};

/**
 * Drop-in for the seed ChatSocket's badge methods. Counts change only through parameterized
 * writes to chat_rooms; the triggers and the bridge carry them into Redis and to every socket
 * server, so nothing here writes Redis and nothing here needs to emit the badge itself.
 */
export class SeedCompatChatSocket {
  constructor(
    private readonly sql: SqlClient,
    private readonly badges: UnreadBadges,
    private readonly options: SeedCompatOptions = {},
  ) {}

  /** Re-reads the user's badge from Redis (hydrating on a miss) and pushes it to the user's sockets. */
  async sendTotalUnreadCount(userId: string): Promise<BadgeTotals | null> {
    return this.guard('sendTotalUnreadCount', () => this.badges.sendTotalUnreadCount(userId));
  }

  /** A message from sender to receiver in room: +1 on the receiver's side, then the seed's room event. */
  async notifyRoomUpdate(senderId: string, receiverId: string, roomId: string, messageData: unknown): Promise<WriteResult> {
    const result = await this.write('notifyRoomUpdate', async () => {
      const sender = parseUserId(senderId, 'sender id');
      const receiver = parseUserId(receiverId, 'receiver id');
      const room = parseUserId(roomId, 'room id');
      // The receiver's side only: user side when they are user_id (wins if both), else company side.
      const unread = await queries.compatIncrementUnread(this.sql, receiver, room);
      if (unread === null) throw new RoomNotFoundError(room, receiver);
      return { ok: true as const, roomId: room, userId: receiver, unread, sender };
    });
    if (!result.ok) return result;
    this.badges.sendToUser(result.userId, 'chat-room-updated', messageData);
    const push = this.options.sendChatPushNotification;
    if (push) {
      const message = messageData && typeof messageData === 'object' ? (messageData as Record<string, unknown>).message : undefined;
      await this.guard('sendChatPushNotification', async () => push(result.sender, result.userId, message));
    }
    return { ok: true, roomId: result.roomId, userId: result.userId, unread: result.unread };
  }

  /** The user opened the room: their side goes to 0. */
  async resetUnreadCountOnJoin(userId: string, roomId: string): Promise<WriteResult> {
    return this.write('resetUnreadCountOnJoin', async () => {
      const user = parseUserId(userId);
      const room = parseUserId(roomId, 'room id');
      if (!(await queries.compatResetOnJoin(this.sql, user, room))) throw new RoomNotFoundError(room, user);
      return { ok: true as const, roomId: room, userId: user, unread: 0 };
    });
  }

  /**
   * The user read the room (Stream `markRead`, Sendbird `markAsRead`): their side goes to 0. One
   * UPDATE; refused, with nothing written, when the room does not exist or the user is neither its
   * user_id nor its company_id.
   */
  async markRoomRead(userId: string, roomId: string): Promise<WriteResult> {
    return this.write('markRoomRead', () => this.setSide(userId, roomId, 0));
  }

  /**
   * Marks the room unread for the user (Stream `markUnread`, Sendbird `markAsUnread`): their side
   * is set to `count` (default 1, an integer from 1 to MAX_MARK_UNREAD). One UPDATE; refused like
   * markRoomRead. Note the badge counts the room only while it is active.
   */
  async markRoomUnread(userId: string, roomId: string, count = 1): Promise<WriteResult> {
    return this.write('markRoomUnread', () => this.setSide(userId, roomId, parseCount(count)));
  }

  /** Sets the user's side of one room (user_id side first, as the triggers count it) in one UPDATE. */
  private async setSide(userId: string, roomId: string, n: number): Promise<{ ok: true; roomId: string; userId: string; unread: number }> {
    const user = parseUserId(userId);
    const room = parseRoomId(roomId);
    const row = await this.roomWrite(room, () => queries.compatSetSide(this.sql, user, room, n));
    if (!row) throw new RoomNotFoundError(room, user);
    return { ok: true as const, roomId: row.id, userId: user, unread: row.unread };
  }

  /**
   * Every room of the user read at once (Stream `markAllRead`, Sendbird `markAllMessagesAsRead`):
   * one UPDATE of the user's sides that have unread; the triggers log each room that changed.
   */
  async markAllRead(userId: string): Promise<MarkAllResult> {
    return this.write('markAllRead', async () => {
      const user = parseUserId(userId);
      return { ok: true as const, userId: user, rooms: await queries.compatMarkAllRead(this.sql, user) };
    });
  }

  /** Runs a write keyed by a room id, turning "Postgres cannot read this id" into a clear error. */
  private async roomWrite<T>(room: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (badIdCode(err)) throw new InvalidInputError(`room id ${JSON.stringify(room.slice(0, 80))} is not a valid chat_rooms id`);
      throw err;
    }
  }

  private async write<T extends { ok: true }>(what: string, fn: () => Promise<T>): Promise<T | { ok: false; error: string }> {
    try {
      return await fn();
    } catch (err) {
      if (this.options.throwOnError) throw err;
      this.options.log?.warn({ err: (err as Error).message }, `${what} failed`);
      return { ok: false, error: (err as Error).message };
    }
  }

  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T | null> {
    try {
      return await fn();
    } catch (err) {
      if (this.options.throwOnError) throw err;
      this.options.log?.warn({ err: (err as Error).message }, `${what} failed`);
      return null;
    }
  }
}
