import { z } from 'zod';
import { ErrorCode, UnreadSyncError } from './errors.js';

/** Any RFC 4122-shaped UUID (Supabase auth ids are v4, seeds may use others). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const uuidSchema = z
  .string()
  .transform((s) => s.toLowerCase())
  .refine((s) => UUID.test(s), { error: 'must be a UUID' });

export class InvalidIdError extends UnreadSyncError {
  constructor(what: string, value: unknown) {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
    super(ErrorCode.INVALID_ID, `${what} must be a UUID, got ${shown}`);
  }
}

/** True for a lower-case UUID, as Postgres prints them and as keys carry them. */
export function isUuid(value: string): boolean {
  return UUID.test(value);
}

/** Validates an id before it can reach SQL, a Redis key or a channel name; returns it lower-cased. */
export function parseUserId(value: unknown, what = 'user id'): string {
  if (typeof value !== 'string' || value.length > 64) throw new InvalidIdError(what, value);
  const lower = value.toLowerCase();
  if (!UUID.test(lower)) throw new InvalidIdError(what, value);
  return lower;
}

/** Longest room id accepted (room ids are opaque: uuid, bigint, integer or text in the app's table). */
export const ROOM_ID_MAX_LENGTH = 256;

/**
 * A room id as the log carries it: opaque text (Postgres prints uuid, bigint, integer and text ids
 * as text), bounded, no control characters. It only ever becomes a hash field (prefixed, see
 * store/keys.ts), never a key or channel name.
 */
export const roomIdSchema = z
  .union([z.string(), z.number().int().transform(String)])
  .refine((s) => s.length >= 1 && s.length <= ROOM_ID_MAX_LENGTH, {
    error: `room id must be 1-${ROOM_ID_MAX_LENGTH} characters`,
  })
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what this rejects
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), { error: 'room id must not contain control characters' });
