import type { Sql } from '../../src/db.js';

/**
 * Port of the seed's `sendTotalUnreadCount`: one database query per badge request, summed in
 * the app. The seed went through supabase-js (PostgREST over HTTP); this port sends the same
 * filter as one parameterized query over a pooled connection, which is strictly cheaper, so
 * the baseline is flattered, not handicapped. is_active is filtered as the brief asks.
 */
export class SeedCurrent {
  constructor(private readonly sql: Sql) {}

  async sendTotalUnreadCount(userId: string): Promise<number> {
    const rooms = await this.sql<
      { user_unread_count: number | null; company_unread_count: number | null; user_id: string; company_id: string }[]
    >`select user_unread_count, company_unread_count, user_id, company_id
        from chat_rooms
       where (user_id = ${userId} or company_id = ${userId}) and is_active`;
    let total = 0;
    for (const room of rooms) {
      // Same rule as the seed's syncFromDatabase: the user side wins when both match.
      if (room.user_id === userId) total += room.user_unread_count ?? 0;
      else if (room.company_id === userId) total += room.company_unread_count ?? 0;
    }
    return total;
  }
}
