import { z } from 'zod';
import { roomIdSchema, uuidSchema } from './ids.js';

/**
 * An unread-change event as every source delivers it (the shape of unread_sync.changes rows,
 * and of the Realtime broadcast payload). Validated before anything reaches Redis.
 */
const version = z
  .union([z.string(), z.number()])
  .transform(String)
  .refine((v) => /^[1-9][0-9]{0,15}$/.test(v) && Number.isSafeInteger(Number(v)), {
    error: 'version must be a positive integer below 2^53',
  });

/** The writing transaction (xid8 as text); Realtime payloads carry it, log rows need not. */
export const xidSchema = z.string().regex(/^[0-9]{1,20}$/, { error: 'xid must be an xid8 (decimal digits)' });

const setEvent = z.object({
  id: version,
  xid: xidSchema.optional(),
  kind: z.literal('set'),
  user_id: uuidSchema,
  room_id: roomIdSchema,
  unread: z.number().int().min(0).max(2_147_483_647),
  negative: z.boolean().default(false),
  created_at: z.union([z.date(), z.string(), z.number()]).optional(),
});

const resetEvent = z.object({
  id: version,
  xid: xidSchema.optional(),
  kind: z.literal('reset'),
  created_at: z.union([z.date(), z.string(), z.number()]).optional(),
});

export const changeEventSchema = z.discriminatedUnion('kind', [setEvent, resetEvent]);

export type ChangeEvent = z.output<typeof changeEventSchema>;
export type SetEvent = Extract<ChangeEvent, { kind: 'set' }>;

export type ParsedEvent = { ok: true; event: ChangeEvent } | { ok: false; reason: string };

export function parseEvent(raw: unknown): ParsedEvent {
  const r = changeEventSchema.safeParse(raw);
  if (r.success) return { ok: true, event: r.data };
  return {
    ok: false,
    reason: r.error.issues.map((i) => `${i.path.join('.') || 'event'}: ${i.message}`).join('; '),
  };
}

/** Milliseconds since the change was written, when the event carries its write time. */
export function ageMs(event: ChangeEvent, now = Date.now()): number | null {
  const at = event.created_at;
  if (at === undefined) return null;
  const t = at instanceof Date ? at.getTime() : new Date(at).getTime();
  return Number.isFinite(t) ? Math.max(0, now - t) : null;
}
