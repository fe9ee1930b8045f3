import { readFileSync } from 'node:fs';
import { Cluster, Command, Redis } from 'ioredis';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import { isUuid } from '../ids.js';
import { sleep } from '../sleep.js';
import { fieldRoom, keyLayout, roomField, type KeyLayout } from './keys.js';
import { HydrateStatus } from './status.js';

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

export interface BadgeTotals {
  total: number;
  unreadRooms: number;
  seq: number;
}

/** A user's cached rooms with versions (see UnreadStore.readRoomState). */
export interface RoomState extends BadgeTotals {
  /** Rooms with unread > 0: count and version. */
  rooms: Map<string, { unread: number; version: string }>;
  /** Rooms at 0 that still remember the version that took them there. */
  zeroed: Map<string, string>;
  /** The snapshot the state was last loaded from (null: unstamped). */
  loadedAt: SnapshotStamp | null;
}

/** roomId -> unread of a room state, as plain own properties (a room named "__proto__" stays a key). */
export const roomCounts = (s: Pick<RoomState, 'rooms'>): Record<string, number> =>
  Object.fromEntries([...s.rooms].map(([room, r]) => [room, r.unread]));

/** One change for one user: the room's new absolute unread count and its version. */
export interface RoomChange {
  roomId: string;
  unread: number;
  version: string;
}

/**
 * Orders snapshots taken one after another: a later snapshot has a larger xmax, or the same xmax
 * and fewer transactions in progress (none can start without a new xid). Equal stamps mean the
 * same visible set. Compared in the Lua scripts to refuse writes older than the state they hit.
 */
export interface SnapshotStamp {
  xmax: string;
  inProgress: number;
}

/** The stamp of a pg_snapshot text "xmin:xmax:xip,...". */
export function snapshotStamp(snapshot: string): SnapshotStamp {
  const m = /^(\d+):(\d+):([\d,]*)$/.exec(snapshot);
  if (!m) throw new UnreadSyncError(ErrorCode.INVALID_INPUT, `not a pg_snapshot: ${JSON.stringify(snapshot)}`);
  return { xmax: m[2] as string, inProgress: m[3] === '' ? 0 : (m[3] as string).split(',').length };
}

/** a is older than b (see SnapshotStamp). */
export function stampOlder(a: SnapshotStamp, b: SnapshotStamp): boolean {
  const ax = BigInt(a.xmax);
  const bx = BigInt(b.xmax);
  return ax < bx || (ax === bx && a.inProgress > b.inProgress);
}

function parseStamp(v: string | null | undefined): SnapshotStamp | null {
  const m = v ? /^(\d+):(\d+)$/.exec(v) : null;
  return m ? { xmax: m[1] as string, inProgress: Number(m[2]) } : null;
}

const stampArgs = (s: SnapshotStamp | null | undefined): [string, string] => (s ? [s.xmax, String(s.inProgress)] : ['', '0']);

export interface ApplyResult {
  userId: string;
  /** ApplyStatus.UNKNOWN_USER: the user is not cached (unknown), nothing was written. */
  applied: number;
  skipped: number;
  totals: BadgeTotals;
}

/** A script's text with its `--- @include "name"` lines replaced by lua/includes/name.lua (as BullMQ does). */
const lua = (name: string): string =>
  readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8').replace(/^--- @include "([\w-]+)"$/gm, (_, include: string) =>
    readFileSync(new URL(`./lua/includes/${include}.lua`, import.meta.url), 'utf8').trimEnd(),
  );
const APPLY_LUA = lua('applyChanges');
/** Most pending hydration requests kept in Redis. */
const HYDRATE_QUEUE_MAX = 100_000;
/** Users per apply script call on a single Redis (a call runs well under a millisecond). */
const USERS_PER_APPLY = 64;
const HYDRATE_LUA = lua('hydrate');
/** Users per hydrate script call on a single Redis. */
const USERS_PER_HYDRATE = 64;

/** Redis error replies after which a cluster command did not run. */
const REDIRECT_REPLIES = new Set(['MOVED', 'ASK', 'TRYAGAIN', 'CLUSTERDOWN']);

/**
 * Errors after which a cluster command did not run (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or may not
 * have run (connection lost in a failover). ioredis retries these for single commands, but an
 * auto-pipeline mixing several slots hands them to the caller instead. ioredis gives them no code:
 * a reply error's first word is Redis's error code (RESP), read as ioredis itself does
 * (`message.split(" ")`); a lost connection or an unready cluster is a plain Error known by its text.
 */
function isRedirected(err: unknown): boolean {
  const message = (err as Error | undefined)?.message ?? '';
  return (
    REDIRECT_REPLIES.has(message.split(' ', 1)[0] as string) ||
    message.includes('Connection is closed') ||
    message.includes("Cluster isn't ready")
  );
}

interface ScriptCommands {
  unreadApply(user: string, tombstones: string, ...argv: string[]): Promise<number[]>;
  unreadApplyMany(numberOfKeys: number, ...keysAndArgv: string[]): Promise<number[]>;
  unreadHydrate(user: string, tombstones: string, ...argv: string[]): Promise<number[]>;
  unreadHydrateMany(numberOfKeys: number, ...keysAndArgv: string[]): Promise<number[]>;
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
    private readonly prefix: string,
    private readonly options: { tombstoneTtlMs: number; deadLetterMax: number } = {
      tombstoneTtlMs: 86_400_000,
      deadLetterMax: 1_000,
    },
  ) {
    this.keys = keyLayout(prefix);
    // defineCommand loads each script once per connection (EVALSHA, falling back to EVAL).
    if (!('unreadApply' in redis)) {
      // Two entry points to the same script: one user (two keys) for a cluster, where ioredis
      // routes auto-pipelined commands by their first argument, which must be a key; and any
      // number of users for a single Redis, the key count passed first.
      redis.defineCommand('unreadApply', { numberOfKeys: 2, lua: APPLY_LUA });
      redis.defineCommand('unreadApplyMany', { lua: APPLY_LUA });
      redis.defineCommand('unreadHydrate', { numberOfKeys: 2, lua: HYDRATE_LUA });
      // Single Redis: many users per call, the prefix's reset floor (meta, first key) checked inside.
      redis.defineCommand('unreadHydrateMany', { lua: HYDRATE_LUA });
    }
    this.scripts = redis as unknown as ScriptCommands;
  }

  /** The same store on a new connection (its own pipeline); the caller disconnects it. */
  duplicate(): UnreadStore {
    // Narrowed for the type checker: Redis and Cluster both have duplicate(), with unrelated signatures.
    const redis = (this.redis as { duplicate(): RedisClient }).duplicate();
    redis.on('error', () => {}); // reconnects on its own; callers see command errors
    return new UnreadStore(redis, this.prefix, this.options);
  }

  /**
   * Applies each user's changes (in order) atomically per user. `stamp`: the snapshot they were
   * read in; a user whose state comes from a newer snapshot is left alone.
   */
  async apply(changes: Map<string, RoomChange[]>, stamp?: SnapshotStamp | null): Promise<ApplyResult[]> {
    const ttl = String(this.options.tombstoneTtlMs);
    // A cluster script must stay in one slot: one user per call there; on a single Redis a call
    // carries many users and saves the per-call overhead.
    const perCall = this.redis instanceof Cluster ? 1 : USERS_PER_APPLY;
    const users = [...changes];
    const calls: Array<Array<[string, RoomChange[]]>> = [];
    for (let i = 0; i < users.length; i += perCall) calls.push(users.slice(i, i + perCall));
    const results = await Promise.all(
      calls.map(async (group) => {
        const keys: string[] = [];
        const argv = [ttl, ...stampArgs(stamp)];
        for (const [userId, list] of group) {
          keys.push(this.keys.user(userId), this.keys.tombstones(userId));
          argv.push(this.keys.channel(userId), String(list.length));
          for (const c of list) argv.push(roomField(c.roomId), String(c.unread), c.version);
        }
        const reply = await this.retryAlone(
          () =>
            perCall === 1
              ? this.scripts.unreadApply(keys[0] as string, keys[1] as string, ...argv)
              : this.scripts.unreadApplyMany(keys.length, ...keys, ...argv),
          APPLY_LUA,
          keys,
          argv,
        );
        return group.map(([userId], i): ApplyResult => {
          const [applied, skipped, total, unreadRooms, seq] = reply.slice(i * 5, i * 5 + 5);
          return {
            userId,
            applied: applied ?? 0,
            skipped: skipped ?? 0,
            totals: { total: total ?? 0, unreadRooms: unreadRooms ?? 0, seq: seq ?? 0 },
          };
        });
      }),
    );
    return results.flat();
  }

  /**
   * Replaces each user's cache with the given rooms (unread > 0) read from one snapshot. With a
   * `stamp`, a user whose state (or the prefix's last reset) is newer than that snapshot is left
   * alone and missing from the result.
   */
  async hydrate(
    users: Map<string, Array<{ roomId: string; unread: number }>>,
    stamp?: SnapshotStamp | null,
  ): Promise<Map<string, BadgeTotals>> {
    const out = new Map<string, BadgeTotals>();
    const cluster = this.redis instanceof Cluster;
    if (stamp && cluster) {
      // The floor lives in another slot: checked here (a reset racing this exact moment is the
      // one case left to the verifier on a cluster).
      const floor = await this.floor();
      if (floor && stampOlder(stamp, floor)) return out;
    }
    // One user per call on a cluster (one slot per script); on a single Redis a call carries
    // many users (and the prefix's reset floor, checked once per call).
    const perCall = cluster ? 1 : USERS_PER_HYDRATE;
    const list = [...users];
    const calls: Array<Array<[string, Array<{ roomId: string; unread: number }>]>> = [];
    for (let i = 0; i < list.length; i += perCall) calls.push(list.slice(i, i + perCall));
    await Promise.all(
      calls.map(async (group) => {
        const keys: string[] = cluster ? [] : [this.keys.meta];
        const argv = [...stampArgs(stamp), String(this.options.tombstoneTtlMs), cluster ? '0' : '1'];
        for (const [userId, rooms] of group) {
          keys.push(this.keys.user(userId), this.keys.tombstones(userId));
          argv.push(this.keys.channel(userId), String(rooms.length));
          for (const r of rooms) argv.push(roomField(r.roomId), String(r.unread));
        }
        const reply = await this.retryAlone(
          () =>
            cluster
              ? this.scripts.unreadHydrate(keys[0] as string, keys[1] as string, ...argv)
              : this.scripts.unreadHydrateMany(keys.length, ...keys, ...argv),
          HYDRATE_LUA,
          keys,
          argv,
        );
        group.forEach(([userId], i) => {
          const [total, unreadRooms, seq] = reply.slice(i * 3, i * 3 + 3);
          if (total === HydrateStatus.REFUSED) return;
          out.set(userId, { total: total ?? 0, unreadRooms: unreadRooms ?? 0, seq: seq ?? 0 });
        });
      }),
    );
    return out;
  }

  /**
   * The user's rooms with their versions, plus the versions of rooms that went to 0 (tombstones),
   * read atomically (one MULTI on one slot); null when the user is not cached. The socket layer
   * diffs two of these to know every room that changed in between, even one that changed and
   * came back to the same count (its version moved).
   */
  async readRoomState(userId: string): Promise<RoomState | null> {
    const replies = await this.redirectSafe(() =>
      this.redis.multi().hgetall(this.keys.user(userId)).hgetall(this.keys.tombstones(userId)).exec(),
    );
    const [hashReply, tombReply] = replies ?? [];
    if (!hashReply || !tombReply) return null;
    if (hashReply[0]) throw hashReply[0];
    if (tombReply[0]) throw tombReply[0];
    const hash = hashReply[1] as Record<string, string>;
    if (hash.t === undefined) return null;
    const rooms = new Map<string, { unread: number; version: string }>();
    for (const [field, value] of Object.entries(hash)) {
      const room = fieldRoom(field);
      if (room === null) continue;
      const sep = value.indexOf(':');
      rooms.set(room, { unread: Number(value.slice(0, sep)), version: value.slice(sep + 1) });
    }
    const zeroed = new Map<string, string>();
    for (const [field, version] of Object.entries(tombReply[1] as Record<string, string>)) {
      const room = fieldRoom(field);
      if (room !== null) zeroed.set(room, version);
    }
    return { total: Number(hash.t), unreadRooms: Number(hash.n), seq: Number(hash.s), rooms, zeroed, loadedAt: parseStamp(hash.y) };
  }

  /** The stamp of the last reset under this prefix (hydrations older than it are refused). */
  async floor(): Promise<SnapshotStamp | null> {
    return parseStamp(await this.redis.hget(this.keys.meta, 'floor'));
  }

  /** Reads the prefix's meta hash (see KeyLayout.meta). */
  async meta(): Promise<Record<string, string>> {
    return this.redis.hgetall(this.keys.meta);
  }

  /** Sets fields of the prefix's meta hash. */
  async setMeta(fields: Record<string, string>): Promise<void> {
    await this.redis.hset(this.keys.meta, fields);
  }

  /**
   * Claims the prefix for `name` for `ttlMs` (renewed by calling again). Returns the other
   * owner's name when another bridge name holds it, null when claimed.
   */
  async claimPrefix(name: string, ttlMs: number): Promise<string | null> {
    const key = this.keys.owner;
    const set = await this.redis.set(key, name, 'PX', ttlMs, 'NX');
    if (set === 'OK') return null;
    const owner = await this.redis.get(key);
    if (owner === null) return this.claimPrefix(name, ttlMs);
    if (owner !== name) return owner;
    await this.redis.pexpire(key, ttlMs);
    return null;
  }

  /** Gives the prefix up (only if `name` still owns it). */
  async releasePrefix(name: string): Promise<void> {
    if ((await this.redis.get(this.keys.owner)) === name) await this.redis.del(this.keys.owner);
  }

  /** The full badge, or null when the user is not cached (unknown, not zero). */
  async read(userId: string): Promise<UnreadCounts | null> {
    const hash = await this.redirectSafe(() => this.redis.hgetall(this.keys.user(userId)));
    if (hash.t === undefined) return null;
    const entries: Array<[string, number]> = [];
    for (const [field, value] of Object.entries(hash)) {
      const room = fieldRoom(field);
      if (room !== null) entries.push([room, Number(value.slice(0, value.indexOf(':')))]);
    }
    // fromEntries defines own properties: a text room id like "__proto__" stays a plain key.
    const rooms: Record<string, number> = Object.fromEntries(entries);
    return {
      userId,
      total: Number(hash.t),
      unreadRooms: Number(hash.n),
      rooms,
      seq: Number(hash.s),
    };
  }

  /**
   * The user's hash and tombstones read atomically (same slot): per room, the cached count and
   * the version it reflects (a tombstoned room is 0 at its tombstone's version). Null when unknown.
   */
  async readVersioned(userId: string): Promise<{
    counts: UnreadCounts;
    versions: Map<string, { unread: number; version: bigint }>;
    /** The snapshot of the last hydration (null: unstamped). */
    loadedAt: SnapshotStamp | null;
  } | null> {
    const s = await this.readRoomState(userId);
    if (!s) return null;
    const versions = new Map<string, { unread: number; version: bigint }>();
    for (const [room, version] of s.zeroed) versions.set(room, { unread: 0, version: BigInt(version) });
    for (const [room, r] of s.rooms) versions.set(room, { unread: r.unread, version: BigInt(r.version) });
    return {
      counts: { userId, total: s.total, unreadRooms: s.unreadRooms, rooms: roomCounts(s), seq: s.seq },
      versions,
      loadedAt: s.loadedAt,
    };
  }

  /** Total and room count only (one small reply), or null when unknown. */
  async readTotals(userId: string): Promise<BadgeTotals | null> {
    const [t, n, s] = await this.redirectSafe(() => this.redis.hmget(this.keys.user(userId), 't', 'n', 's'));
    if (t === null || t === undefined) return null;
    return { total: Number(t), unreadRooms: Number(n), seq: Number(s) };
  }

  /** Whether each user is cached (one EXISTS per user, auto-pipelined). */
  async cached(userIds: string[]): Promise<boolean[]> {
    const replies = await Promise.all(userIds.map((id) => this.redirectSafe(() => this.redis.exists(this.keys.user(id)))));
    return replies.map((n) => n === 1);
  }

  /** Asks the bridge to (re)load these users from the database. */
  async requestHydration(userIds: string[]): Promise<void> {
    if (userIds.length === 0) return;
    // Capped: readers re-ask while no bridge runs, and the queue must not crowd badges out of
    // memory; the oldest requests go first (their readers have re-asked since).
    await this.redis
      .multi()
      .lpush(this.keys.hydrateQueue, ...userIds)
      .ltrim(this.keys.hydrateQueue, 0, HYDRATE_QUEUE_MAX - 1)
      .exec();
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

  /**
   * Forgets every cached user (all nodes of a cluster) and tells socket servers to re-read.
   * `floor`: the stamp of the snapshot the reset happened in; hydrations read before it are
   * refused from now on (set, not raised: after a database rewind the new stamps are lower).
   */
  async forgetAll(floor?: SnapshotStamp | null, onPage?: () => void): Promise<number> {
    if (floor) await this.redis.hset(this.keys.meta, 'floor', `${floor.xmax}:${floor.inProgress}`);
    let removed = 0;
    // One pass per master over the prefix (not one per key form), in large pages: on a Redis
    // shared with other data, SCAN's cost is the whole keyspace, and hydrations wait for this.
    for (const node of this.masters()) {
      let cursor = '0';
      do {
        const [next, found] = await node.scan(cursor, 'MATCH', this.keys.prefixPattern, 'COUNT', 10_000);
        cursor = next;
        const keys = found.filter((k) => this.keys.isUserKey(k));
        // One key per call: on a cluster the keys of one page live in different slots.
        await Promise.all(keys.map((k) => node.unlink(k)));
        removed += keys.length;
        onPage?.();
      } while (cursor !== '0');
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
        // Keys under our prefix that are not ours (a stray or hostile write) are not users.
        const users = keys.map((k) => k.slice(start + 1, -1)).filter(isUuid);
        if (users.length > 0) yield users;
      } while (cursor !== '0');
    }
  }

  /**
   * The next page of cached users from a rolling SCAN (one cursor per master), so that repeated
   * calls walk the whole keyspace over time. Ids that are not UUIDs (stray keys) are left out.
   */
  async nextUsers(position: ScanPosition, count: number): Promise<string[]> {
    const nodes = this.masters();
    const pattern = this.keys.userPatterns[0] as string;
    const start = pattern.indexOf('{');
    const found: string[] = [];
    // SCAN's COUNT is slots looked at, not matches: where other keys share the database a page
    // can match nothing, so keep walking (bounded) until enough users are found.
    for (let pages = 0; pages < 20 && found.length < count; pages++) {
      const node = nodes[position.node % nodes.length] as Redis;
      const [next, keys] = await node.scan(position.cursor, 'MATCH', pattern, 'COUNT', Math.max(count * 20, 1_000));
      position.cursor = next;
      if (next === '0') position.node = (position.node + 1) % nodes.length;
      for (const k of keys) {
        const id = k.slice(start + 1, -1);
        if (isUuid(id)) found.push(id);
      }
      if (next === '0') break;
    }
    // Everything found is returned: dropping the surplus would leave those users out of the walk.
    return found;
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

  /**
   * On a cluster, waits until every master that has a connected replica has passed this client's
   * writes on to it (WAIT). The bridge calls this before acknowledging a cycle to its source, so
   * a master killed right after a write cannot take acknowledged changes with it: either the
   * promoted replica has them, or the command fails and the cycle is replayed (idempotent).
   * Returns how many masters did not confirm within `timeoutMs` (replica lagging or cut off);
   * those writes are as safe as Redis' asynchronous replication makes them, and the caller goes on
   * rather than stalling every badge update on one slow replica.
   */
  async awaitReplication(timeoutMs = 1_000): Promise<number> {
    if (!(this.redis instanceof Cluster)) return 0;
    const results = await Promise.all(
      this.masters().map(async (node) => {
        const info = await node.info('replication');
        // WAIT with no replica would sit out the whole timeout.
        if (Number(/connected_slaves:(\d+)/.exec(info)?.[1] ?? 0) === 0) return true;
        return ((await node.call('WAIT', 1, timeoutMs)) as number) >= 1;
      }),
    );
    return results.filter((ok) => !ok).length;
  }

  /**
   * Runs a script through the auto-pipeline (grouped per node); on a cluster redirect or a lost
   * connection it is sent again on its own, where ioredis follows MOVED/ASK/TRYAGAIN itself.
   * Both scripts are idempotent (versions; a hydration rewrites the same snapshot), so a retry
   * after "maybe ran" is safe.
   */
  private async retryAlone(first: () => Promise<number[]>, script: string, keys: readonly string[], argv: string[]): Promise<number[]> {
    try {
      return await first();
    } catch (err) {
      if (!(this.redis instanceof Cluster) || !isRedirected(err)) throw err;
      const command = new Command('eval', [script, keys.length, ...keys, ...argv], { replyEncoding: 'utf8' });
      return (await this.redis.sendCommand(command)) as number[];
    }
  }

  /**
   * Reads on a cluster: a redirect met inside an auto-pipeline reaches the caller instead of being
   * followed (during a reshard or failover); one retry after the slot map refreshed answers it.
   */
  private async redirectSafe<T>(read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      if (!(this.redis instanceof Cluster) || !isRedirected(err)) throw err;
      await sleep(50);
      return read();
    }
  }

  private masters(): Redis[] {
    return this.redis instanceof Cluster ? this.redis.nodes('master') : [this.redis];
  }
}

/** Connects to Redis, or to a Redis Cluster when seed nodes are given, with the options unread-sync relies on. */
export function createRedis(url: string, options: { clusterNodes?: string[] } = {}): RedisClient {
  const common = { enableAutoPipelining: true };
  if (options.clusterNodes && options.clusterNodes.length > 0) {
    const nodes = options.clusterNodes.map((n) => {
      const [host, port] = n.split(':');
      return { host: host as string, port: Number(port) };
    });
    // shardedSubscribers: SSUBSCRIBE goes to the master owning each channel's slot (one
    // connection per master, opened on first use, moved on failover); without it ioredis sends
    // every SSUBSCRIBE to one node and messages of other slots never arrive.
    // slotsRefreshInterval: ioredis 6 has no periodic refresh by default, and redirects seen inside
    // an auto-pipeline do not trigger one, so after a failover the slot map could stay stale.
    return new Cluster(nodes, {
      ...common,
      shardedSubscribers: true,
      slotsRefreshInterval: 2_000,
      redisOptions: { maxRetriesPerRequest: 3 },
    });
  }
  return new Redis(url, { ...common, maxRetriesPerRequest: 3 });
}
