import * as z from 'zod/mini';

/** Wire names shared with the server (src/socket/badges.ts); kept here so the client imports nothing server-side. */
export const TOTAL_EVENT = 'total-unread-count-updated';
export const ROOMS_EVENT = 'unread-rooms-updated';
export const COUNTS_EVENT = 'get-unread-counts';
export const EXPIRED_EVENT = 'unread-auth-expired';

const count = z.int().check(z.nonnegative());
const seq = z.number().check(z.nonnegative());
const rooms = z.record(z.string(), count);

// Network input is validated before it can touch the state: a malformed event is dropped, never half-applied.
export const totalPayload = z.object({ userId: z.string(), totalUnreadCount: count, unreadRooms: count, seq });
export const roomsPayload = z.object({
  userId: z.string(),
  seq,
  totalUnreadCount: count,
  unreadRooms: count,
  full: z.boolean(),
  baseSeq: seq,
  rooms,
});
export const countsReply = z.object({ userId: z.string(), totalUnreadCount: count, unreadRooms: count, rooms, seq });
export const errorReply = z.object({ error: z.string() });

export type TotalUnreadPayload = z.infer<typeof totalPayload>;
export type RoomsUpdatedPayload = z.infer<typeof roomsPayload>;
export type UnreadCountsReply = z.infer<typeof countsReply>;
