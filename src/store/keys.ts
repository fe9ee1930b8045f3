/**
 * Redis key layout. Every key and shard channel of one user carries the same hash tag {userId},
 * so one user lives in one cluster slot and every Lua script touches one slot only.
 * Callers pass validated UUIDs only (see ids.ts); nothing else reaches a key name.
 */
export interface KeyLayout {
  /** Hash: room id -> "count:version", plus t (total), n (rooms with unread), s (seq). */
  user(userId: string): string;
  /** Hash: room id -> version of the change that took the room to 0; expires. */
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
  /** SCAN patterns matching every per-user key. */
  userPatterns: string[];
}

export function keyLayout(prefix: string): KeyLayout {
  return {
    user: (id) => `${prefix}u:{${id}}`,
    tombstones: (id) => `${prefix}d:{${id}}`,
    channel: (id) => `${prefix}c:{${id}}`,
    hydrateQueue: `${prefix}hydrate`,
    deadLetters: `${prefix}deadletter`,
    resetChannel: `${prefix}reset`,
    meta: `${prefix}meta`,
    owner: `${prefix}owner`,
    userPatterns: [`${prefix}u:{*}`, `${prefix}d:{*}`],
  };
}
