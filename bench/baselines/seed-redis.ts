import type { Redis } from 'ioredis';
import type { Sql } from '../../src/db.js';

/**
 * Faithful port of the seed's UnreadCountManager (docs: redis-badge-system.md), ioredis instead
 * of node-redis. Kept deliberately as written, races included: total is recomputed with
 * HGETALL + HSET (not atomic with the HINCRBY), decrement is HGET / compute / HSET.
 * Key layout as in the seed, `user:{userId}:unread_counts`, under a bench prefix.
 */
export class SeedUnreadCountManager {
  constructor(
    readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  key(userId: string): string {
    return `${this.prefix}user:${userId}:unread_counts`;
  }

  async incrementUnreadCount(userId: string, roomId: string): Promise<number> {
    await this.redis.hincrby(this.key(userId), roomId, 1);
    const total = await this.getTotalUnreadCount(userId);
    await this.redis.hset(this.key(userId), 'total', total);
    return total;
  }

  async decrementUnreadCount(userId: string, roomId: string, count = 1): Promise<number> {
    const current = Number((await this.redis.hget(this.key(userId), roomId)) ?? 0);
    const newCount = Math.max(0, current - count);
    await this.redis.hset(this.key(userId), roomId, newCount);
    const total = await this.getTotalUnreadCount(userId);
    await this.redis.hset(this.key(userId), 'total', total);
    return total;
  }

  async resetRoomUnreadCount(userId: string, roomId: string): Promise<number> {
    await this.redis.hdel(this.key(userId), roomId);
    const total = await this.getTotalUnreadCount(userId);
    await this.redis.hset(this.key(userId), 'total', total);
    return total;
  }

  async getTotalUnreadCount(userId: string): Promise<number> {
    const counts = await this.redis.hgetall(this.key(userId));
    let total = 0;
    for (const [key, value] of Object.entries(counts)) {
      if (key !== 'total') total += parseInt(value, 10) || 0;
    }
    return total;
  }

  /** The seed's badge fast path: HGET total, falling back to a database sync on a miss. */
  async readTotal(userId: string, sql: Sql): Promise<number> {
    const raw = await this.redis.hget(this.key(userId), 'total');
    if (raw === null) return this.syncFromDatabase(userId, sql);
    return parseInt(raw, 10) || 0;
  }

  async syncFromDatabase(userId: string, sql: Sql): Promise<number> {
    const rooms = await sql<
      { id: string; user_unread_count: number | null; company_unread_count: number | null; user_id: string; company_id: string }[]
    >`select id::text as id, user_unread_count, company_unread_count, user_id, company_id
        from chat_rooms where (user_id = ${userId} or company_id = ${userId}) and is_active`;
    const counts: Record<string, number> = {};
    let total = 0;
    for (const room of rooms) {
      let unreadCount = 0;
      if (room.user_id === userId) unreadCount = room.user_unread_count ?? 0;
      else if (room.company_id === userId) unreadCount = room.company_unread_count ?? 0;
      if (unreadCount > 0) {
        counts[room.id] = unreadCount;
        total += unreadCount;
      }
    }
    counts.total = total;
    // The seed uses HMSET (deprecated alias); HSET with a map is the same command family.
    if (Object.keys(counts).length > 0) await this.redis.hset(this.key(userId), counts);
    return total;
  }
}
