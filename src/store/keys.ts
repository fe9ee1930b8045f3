/**
 * Redis key layout. Every key and shard channel of one user carries the same hash tag {userId},
 * so one user lives in one cluster slot and every Lua script touches one slot only.
 * Callers pass validated UUIDs only (see ids.ts); nothing else reaches a key name.
 *
 * Layout version 2 (the `2` in `u2:` / `d2:`): room fields are `r:<roomId>`, so an opaque room id
 * (text ids: a room may be called "t") can never collide with the reserved fields t, n, s.
 * Version 1 keys (`u:` / `d:`, bare room ids) are never read: a bridge on version 2 sees those
 * users as not cached and hydrates them; its first-start forgetAll removes the old keys.
 */
export const LAYOUT_VERSION = 2;

/** Hash field of a room in a user hash or tombstone hash (reserved fields are single letters). */
export const roomField = (roomId: string): string => `r:${roomId}`;

/** The room id of a hash field, or null for a reserved field (t, n, s). */
export const fieldRoom = (field: string): string | null => (field.startsWith('r:') ? field.slice(2) : null);

export interface KeyLayout {
  /** Hash: `r:<room id>` -> "count:version", plus t (total), n (rooms with unread), s (seq). */
  user(userId: string): string;
  /** Hash: `r:<room id>` -> version of the change that took the room to 0; expires. */
  tombstones(userId: string): string;
  /** Shard channel carrying "total unreadRooms seq" after each change of the user. */
  channel(userId: string): string;
  /** List of user ids waiting to be hydrated by the bridge. */
  hydrateQueue: string;
  /** Capped list of rejected events, newest first, as JSON. */
  deadLetters: string;
  /** Plain channel: "every cached user was forgotten" (TRUNCATE, gap rebuild). */
  resetChannel: string;
  /**
   * Hash: what the bridges applied under this prefix: floor (stamp of the last reset; older
   * hydrations are refused), incarnation of the database, highest snapshot xmax and log id applied.
   */
  meta: string;
  /** String with a TTL: the bridge name that owns this prefix (refreshed while it runs). */
  owner: string;
  /** SCAN patterns matching every per-user key (the first: user hashes), old layouts included. */
  userPatterns: string[];
  /** One SCAN pattern covering every key of the prefix, for a single pass over the keyspace. */
  prefixPattern: string;
  /** Whether a key found by `prefixPattern` is a per-user key of any layout (what a reset deletes). */
  isUserKey(key: string): boolean;
}

/** Escapes glob metacharacters so a prefix matches itself only in SCAN's MATCH. */
const globEscape = (s: string): string => s.replace(/[*?[\]\\]/g, '\\$&');

export function keyLayout(prefix: string): KeyLayout {
  return {
    user: (id) => `${prefix}u2:{${id}}`,
    tombstones: (id) => `${prefix}d2:{${id}}`,
    channel: (id) => `${prefix}c:{${id}}`,
    hydrateQueue: `${prefix}hydrate`,
    deadLetters: `${prefix}deadletter`,
    resetChannel: `${prefix}reset`,
    meta: `${prefix}meta`,
    owner: `${prefix}owner`,
    userPatterns: [`${prefix}u2:{*}`, `${prefix}d2:{*}`, `${prefix}u:{*}`, `${prefix}d:{*}`],
    prefixPattern: `${globEscape(prefix)}*`,
    isUserKey: (key) => {
      if (!key.startsWith(prefix)) return false;
      const rest = key.slice(prefix.length);
      return /^(?:u2|d2|u|d):\{[^}]*\}$/.test(rest);
    },
  };
}
