import { readFileSync } from 'node:fs';
import { Cluster, Redis } from 'ioredis';
import { keyLayout, type KeyLayout } from './keys.js';

export type RedisClient = Redis | Cluster;

/** One user's badge as cached in Redis. */
export interface UnreadCounts {
  userId: string;
  total: number;
  unreadRooms: number;
  /** Unread count per room id; rooms at 0 are absent. */
  rooms: Record<string, number>;
  /** Monotonic per user: a client keeps the highest seq it has seen (0 when read from the database). */
  seq: number;
  /** Set when Redis was unavailable and the database fallback answered. */
  fromDatabase?: true;
}

/** Where a rolling scan over cached users stands. */
export interface ScanPosition {
  node: number;
  cursor: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface BadgeTotals {
  total: number;
  unreadRooms: number;
  seq: number;
}

/** One change for one user: the room's new absolute unread count and its version. */
export interface RoomChange {
  roomId: string;
  unread: number;
  version: string;
}

export interface ApplyResult {
  userId: string;
  /** -1: the user is not cached (unknown), nothing was written. */
  applied: number;
  skipped: number;
  totals: BadgeTotals;
}

const lua = (name: string) => readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');

interface ScriptCommands {
  unreadApply(user: string, tombstones: string, ...argv: string[]): Promise<number[]>;
  unreadHydrate(user: string, tombstones: string, ...argv: string[]): Promise<number[]>;
}

/** Parses the "total unreadRooms seq" text published on a user's channel. */
export function parseTotalsMessage(message: string): BadgeTotals | null {
  const parts = message.split(' ');
  if (parts.length !== 3) return null;
  const [total, unreadRooms, seq] = parts.map(Number) as [number, number, number];
  if (![total, unreadRooms, seq].every(Number.isSafeInteger)) return null;
  return { total, unreadRooms, seq };
}

/**
 * The Redis side of unread-sync: applies changes and hydrations through Lua scripts, and
 * reads badges. Commands are issued concurrently and auto-pipelined by ioredis, which also
 * groups them per node on a cluster.
 */
export class UnreadStore {
  readonly keys: KeyLayout;
  private readonly scripts: ScriptCommands;

  constructor(
    readonly redis: RedisClient,
    prefix: string,
    private readonly options: { tombstoneTtlMs: number; deadLetterMax: number } = {
      tombstoneTtlMs: 86_400_000,
      deadLetterMax: 1_000,
    },
  ) {
    this.keys = keyLayout(prefix);
    // defineCommand loads each script once per connection (EVALSHA, falling back to EVAL).
    if (!('unreadApply' in redis)) {
      redis.defineCommand('unreadApply', { numberOfKeys: 2, lua: lua('applyChanges') });
      redis.defineCommand('unreadHydrate', { numberOfKeys: 2, lua: lua('hydrate') });
    }
    this.scripts = redis as unknown as ScriptCommands;
  }

  /** Applies each user's changes (in order) atomically per user. */
  async apply(changes: Map<string, RoomChange[]>): Promise<ApplyResult[]> {
    const ttl = String(this.options.tombstoneTtlMs);
    return Promise.all(
      [...changes].map(async ([userId, list]) => {
        const argv = [ttl, this.keys.channel(userId)];
        for (const c of list) argv.push(c.roomId, String(c.unread), c.version);
        const [applied, skipped, total, unreadRooms, seq] = await this.scripts.unreadApply(
          this.keys.user(userId),
          this.keys.tombstones(userId),
          ...argv,
        );
        return {
          userId,
          applied: applied ?? 0,
          skipped: skipped ?? 0,
          totals: { total: total ?? 0, unreadRooms: unreadRooms ?? 0, seq: seq ?? 0 },
        };
      }),
    );
  }

  /** Replaces each user's cache with the given rooms (unread > 0) read from one snapshot. */
  async hydrate(users: Map<string, Array<{ roomId: string; unread: number }>>): Promise<Map<string, BadgeTotals>> {
    const out = new Map<string, BadgeTotals>();
    await Promise.all(
      [...users].map(async ([userId, rooms]) => {
        const argv = [this.keys.channel(userId)];
        for (const r of rooms) argv.push(r.roomId, String(r.unread));
        const [total, unreadRooms, seq] = await this.scripts.unreadHydrate(
          this.keys.user(userId),
          this.keys.tombstones(userId),
          ...argv,
        );
        out.set(userId, { total: total ?? 0, unreadRooms: unreadRooms ?? 0, seq: seq ?? 0 });
      }),
    );
    return out;
  }

  /** The full badge, or null when the user is not cached (unknown, not zero). */
  async read(userId: string): Promise<UnreadCounts | null> {
    const hash = await this.redis.hgetall(this.keys.user(userId));
    if (hash.t === undefined) return null;
    const rooms: Record<string, number> = {};
    for (const [field, value] of Object.entries(hash)) {
      if (field.length > 1) rooms[field] = Number(value.slice(0, value.indexOf(':')));
    }
    return {
      userId,
      total: Number(hash.t),
      unreadRooms: Number(hash.n),
      rooms,
      seq: Number(hash.s),
    };
  }

  /** Total and room count only (one small reply), or null when unknown. */
  async readTotals(userId: string): Promise<BadgeTotals | null> {
    const [t, n, s] = await this.redis.hmget(this.keys.user(userId), 't', 'n', 's');
    if (t === null || t === undefined) return null;
    return { total: Number(t), unreadRooms: Number(n), seq: Number(s) };
  }

  /** Asks the bridge to (re)load these users from the database. */
  async requestHydration(userIds: string[]): Promise<void> {
    if (userIds.length === 0) return;
    await this.redis.lpush(this.keys.hydrateQueue, ...userIds);
    // Wake-up for an idle bridge; the list is the record.
    await this.redis.publish(this.keys.hydrateQueue, '1');
  }

  /** Pops up to `max` pending hydration requests without blocking. */
  async takeHydrationRequests(max: number): Promise<string[]> {
    const got = await this.redis.rpop(this.keys.hydrateQueue, max);
    return got ?? [];
  }

  /** Records a rejected event with its reason; the list is capped. */
  async deadLetter(entry: { reason: string; event: unknown; source: string }): Promise<void> {
    const json = JSON.stringify({ ...entry, at: new Date().toISOString() });
    await this.redis
      .multi()
      .lpush(this.keys.deadLetters, json)
      .ltrim(this.keys.deadLetters, 0, this.options.deadLetterMax - 1)
      .exec();
  }

  async deadLetters(limit = 100): Promise<unknown[]> {
    const rows = await this.redis.lrange(this.keys.deadLetters, 0, limit - 1);
    return rows.map((r) => JSON.parse(r) as unknown);
  }

  /** Makes a user unknown again; the next read hydrates it from the database. */
  async forget(userIds: string[]): Promise<void> {
    if (userIds.length === 0) return;
    await Promise.all(userIds.map((id) => this.redis.del(this.keys.user(id))));
  }

  /** Forgets every cached user (all nodes of a cluster) and tells socket servers to re-read. */
  async forgetAll(): Promise<number> {
    let removed = 0;
    for (const node of this.masters()) {
      for (const pattern of this.keys.userPatterns) {
        let cursor = '0';
        do {
          const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          cursor = next;
          // One key per call: on a cluster the keys of one page live in different slots.
          await Promise.all(keys.map((k) => node.unlink(k)));
          removed += keys.length;
        } while (cursor !== '0');
      }
    }
    await this.redis.publish(this.keys.resetChannel, 'reset');
    return removed;
  }

  /** Every cached user id (SCAN over all masters); used by verify. */
  async *cachedUsers(pageSize = 1000): AsyncGenerator<string[]> {
    const pattern = this.keys.userPatterns[0] as string;
    const start = pattern.indexOf('{');
    for (const node of this.masters()) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', pageSize);
        cursor = next;
        if (keys.length > 0) yield keys.map((k) => k.slice(start + 1, -1));
      } while (cursor !== '0');
    }
  }

  /**
   * The next page of cached users from a rolling SCAN (one cursor per master), so that repeated
   * calls walk the whole keyspace over time. Ids that are not UUIDs (stray keys) are left out.
   */
  async nextUsers(position: ScanPosition, count: number): Promise<string[]> {
    const nodes = this.masters();
    const node = nodes[position.node % nodes.length] as Redis;
    const pattern = this.keys.userPatterns[0] as string;
    const start = pattern.indexOf('{');
    const [next, keys] = await node.scan(position.cursor, 'MATCH', pattern, 'COUNT', count);
    position.cursor = next;
    if (next === '0') position.node = (position.node + 1) % nodes.length;
    return keys.map((k) => k.slice(start + 1, -1)).filter((id) => UUID.test(id));
  }

  /** used_memory from INFO, summed over every master. */
  async usedMemory(): Promise<number> {
    let sum = 0;
    for (const node of this.masters()) {
      const info = await node.info('memory');
      sum += Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
    }
    return sum;
  }

  /** Average MEMORY USAGE of user hashes over the next page of a rolling scan (0 when none). */
  async sampleBytesPerUser(position: ScanPosition, sample: number): Promise<number> {
    const users = await this.nextUsers(position, sample);
    if (users.length === 0) return 0;
    const sizes = await Promise.all(users.map((u) => this.redis.memory('USAGE', this.keys.user(u))));
    const known = sizes.filter((n): n is number => typeof n === 'number');
    return known.length === 0 ? 0 : Math.round(known.reduce((a, b) => a + b, 0) / known.length);
  }

  private masters(): Redis[] {
    return this.redis instanceof Cluster ? this.redis.nodes('master') : [this.redis];
  }
}

/** Connects to Redis, or to a Redis Cluster when seed nodes are given, with the options unread-sync relies on. */
export function createRedis(url: string, options: { clusterNodes?: string[]; lazy?: boolean } = {}): RedisClient {
  const common = { enableAutoPipelining: true, lazyConnect: options.lazy ?? false };
  if (options.clusterNodes && options.clusterNodes.length > 0) {
    const nodes = options.clusterNodes.map((n) => {
      const [host, port] = n.split(':');
      return { host: host as string, port: Number(port) };
    });
    return new Cluster(nodes, { ...common, redisOptions: { maxRetriesPerRequest: 3 } });
  }
  return new Redis(url, { ...common, maxRetriesPerRequest: 3 });
}
