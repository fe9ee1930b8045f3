import { z } from 'zod';

/** Any RFC 4122-shaped UUID (Supabase auth ids are v4, seeds may use others). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const uuidSchema = z
  .string()
  .transform((s) => s.toLowerCase())
  .refine((s) => UUID.test(s), { error: 'must be a UUID' });

export class InvalidIdError extends Error {
  constructor(what: string, value: unknown) {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
    super(`${what} must be a UUID, got ${shown}`);
    this.name = 'InvalidIdError';
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
