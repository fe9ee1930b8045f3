import type { Namespace, Server, Socket } from 'socket.io';
import type { Logger } from '../log.js';
import { parseUserId } from '../ids.js';
import { UnreadReader, type CountsFallback } from '../read/reader.js';
import { parseTotalsMessage, roomCounts, UnreadStore, type BadgeTotals, type RedisClient, type RoomState } from '../store/store.js';
import { AuthError, createTokenVerifier, tokenFromHandshake, type AuthOptions, type TokenVerifier } from './auth.js';
import { Coalescer } from './coalesce.js';

/** How long a new socket's first read waits for its subscription (Redis may be down). */
const SUBSCRIBE_WAIT_MS = 500;

/** Reads of one socket's get-unread-counts running at once; more are refused, not queued. */
const COUNTS_IN_FLIGHT = 2;
const COUNTS_LIMIT_DEFAULTS = { perSecond: 5, burst: 10, disconnectAfter: 100 };

/** Seed event and field names (kept for client compatibility). */
export const TOTAL_EVENT = 'total-unread-count-updated';
export const COUNTS_EVENT = 'get-unread-counts';
/** Per-room live updates (issue 14): the first one per socket is full, later ones are deltas. */
export const ROOMS_EVENT = 'unread-rooms-updated';

/**
 * Payload of `unread-rooms-updated`. Client rule: full -> replace the state if seq >= its seq;
 * delta -> ignore if seq <= its seq, apply if baseSeq <= its seq, otherwise (a gap) ask
 * `get-unread-counts` for a full state.
 */
export interface RoomsUpdatedPayload {
  userId: string;
  /** The same per-user seq as total-unread-count-updated (Redis field s). */
  seq: number;
  totalUnreadCount: number;
  unreadRooms: number;
  /** true: `rooms` is the complete map of rooms with unread > 0 (a room absent = 0). */
  full: boolean;
  /** For a delta: `rooms` holds every room whose count changed between baseSeq and seq. */
  baseSeq: number;
  /** roomId -> unread (0 = now read). Room ids are opaque strings. */
  rooms: Record<string, number>;
}

export interface TotalUnreadPayload {
  userId: string;
  totalUnreadCount: number;
  unreadRooms: number;
  /** Monotonic per user: clients keep the highest seq they have seen. */
  seq: number;
}

export interface UnreadCountsReply {
  userId: string;
  totalUnreadCount: number;
  unreadRooms: number;
  rooms: Record<string, number>;
  seq: number;
}

export interface ErrorReply {
  error: string;
}

export interface AttachOptions {
  /** Command connection (reads, hydration requests). A subscriber is duplicated from it. */
  redis: RedisClient;
  keyPrefix: string;
  /** Supabase JWT settings, or your own verifier. */
  auth: AuthOptions | TokenVerifier;
  log?: Logger | undefined;
  /** Namespace to serve; default "/". */
  namespace?: string | undefined;
  hydrateTimeoutMs?: number | undefined;
  /** Database reads while Redis is down (DbFallback); absent = clients keep their last total. */
  fallback?: CountsFallback | undefined;
  /** Minimum gap between two emits for one user; bursts in between are folded into the last value. */
  coalesceMs?: number | undefined;
  /** Periodic re-check of connected users against Redis; 0 disables. */
  reconcileIntervalMs?: number | undefined;
  /** Room a user's sockets join; default `user:<id>`. */
  roomFor?: ((userId: string) => string) | undefined;
  /**
   * Per-socket budget of get-unread-counts: `perSecond` refill, `burst` at once; after
   * `disconnectAfter` refusals in a row the socket is disconnected. Default 5/s, burst 10, 100.
   */
  countsRateLimit?: { perSecond?: number; burst?: number; disconnectAfter?: number } | undefined;
  /** Disconnect a socket when its token expires (clients reconnect with a fresh token). Default true. */
  disconnectOnExpiry?: boolean | undefined;
}

export interface UnreadBadges {
  /** Badge emits so far (one per user room emit or initial socket emit). */
  emitCount(): number;
  readonly namespace: Namespace;
  readonly store: UnreadStore;
  readonly reader: UnreadReader;
  roomFor(userId: string): string;
  /** Re-reads a user's totals (hydrating on a miss) and pushes them to this server's sockets of that user. */
  sendTotalUnreadCount(userId: string): Promise<BadgeTotals>;
  /** Emits to every socket of the user in this namespace (through the server's adapter). */
  sendToUser(userId: string, event: string, data: unknown): void;
  /** Re-reads every connected user (after a reset or a Redis reconnect). */
  refreshAll(): Promise<void>;
  /** Users this server has sockets for (and is subscribed to). */
  connectedUsers(): string[];
  close(): Promise<void>;
}

interface UserState {
  userId: string;
  sockets: number;
  /** Resolves once SSUBSCRIBE is acknowledged. */
  subscribed: Promise<unknown>;
  /** Total emits to the user's sockets, coalesced and in seq order. */
  totals: Coalescer<BadgeTotals>;
  /** What this server last sent the user's sockets on ROOMS_EVENT; null before the first read. */
  roomsSent: RoomState | null;
  /** A read of the room map is in flight / another one was asked for meanwhile. */
  roomsBusy: boolean;
  roomsAgain: boolean;
  /** The next ROOMS_EVENT goes out full (after a reset, a Redis reconnect, a missed publish). */
  roomsFull: boolean;
  /** Sockets waiting for their first (full) ROOMS_EVENT; they join the rooms room with it. */
  newcomers: Socket[];
}

const payload = (userId: string, t: BadgeTotals): TotalUnreadPayload => ({
  userId,
  totalUnreadCount: t.total,
  unreadRooms: t.unreadRooms,
  seq: t.seq,
});

const MAX_TIMEOUT = 2_147_483_647;

/**
 * Every room whose count or version differs between two reads: a room that changed and came back
 * to the same count (or went 0 -> n -> 0) has a newer version, so it is listed too. That makes the
 * delta right for a client at any seq between the two reads, not only at the first.
 */
export function roomsDelta(before: RoomState, after: RoomState): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [room, r] of after.rooms) {
    const old = before.rooms.get(room);
    if (!old || old.unread !== r.unread || old.version !== r.version) out[room] = r.unread;
  }
  for (const [room] of before.rooms) if (!after.rooms.has(room)) out[room] = 0;
  for (const [room, version] of after.zeroed) {
    if (after.rooms.has(room) || room in out) continue;
    if (before.zeroed.get(room) !== version) out[room] = 0;
  }
  return out;
}

/**
 * Serves unread badges on an existing Socket.IO server. Each socket authenticates with a
 * Supabase JWT and joins its user's room; this server SSUBSCRIBEs to the shard channels of the
 * users it has sockets for and emits, coalesced and in seq order, to its own sockets only.
 */
export function attachUnreadBadges(io: Server, options: AttachOptions): UnreadBadges {
  const log = options.log;
  const nsp = io.of(options.namespace ?? '/');
  const store = new UnreadStore(options.redis, options.keyPrefix);
  const reader = new UnreadReader(store, {
    hydrateTimeoutMs: options.hydrateTimeoutMs ?? 3_000,
    ...(options.fallback ? { fallback: options.fallback } : {}),
  });
  const verify = typeof options.auth === 'function' ? options.auth : createTokenVerifier(options.auth);
  const coalesceMs = options.coalesceMs ?? 50;
  const roomFor = options.roomFor ?? ((id: string) => `user:${id}`);
  const disconnectOnExpiry = options.disconnectOnExpiry ?? true;
  const users = new Map<string, UserState>();
  const channelPrefix = store.keys.channel('');
  let closed = false;
  let emits = 0;

  // Narrowed for the type checker: Redis and Cluster both have duplicate(), with unrelated signatures.
  const sub = (options.redis as { duplicate(): RedisClient }).duplicate();
  sub.on('error', (err: Error) => log?.warn({ err: err.message }, 'socket subscriber redis error'));
  let readyOnce = false;
  sub.on('ready', () => {
    // ioredis re-subscribes on its own; after a reconnect Redis may have lost data, so re-read.
    if (readyOnce) {
      log?.info({ users: users.size }, 'redis reconnected, refreshing connected users');
      void refreshAll();
    }
    readyOnce = true;
  });
  sub.on('smessage', (channel: string, message: string) => {
    // Channel is `${prefix}c:{<id>}`: the id sits between the braces.
    const userId = channel.slice(channelPrefix.length - 1, -1);
    const state = users.get(userId);
    if (!state) return;
    const totals = parseTotalsMessage(message);
    if (totals) state.totals.offer(totals);
    // Forward-compatible: a bridge that announces "change for an uncached user" gets it re-read now
    // instead of at the next reconcile.
    else if (message === 'unknown') void refreshUser(state);
  });
  sub.on('message', (channel: string) => {
    if (channel === store.keys.resetChannel) {
      log?.info({ users: users.size }, 'reset published, refreshing connected users');
      void refreshAll();
    }
  });
  // Subscribed again on every (re)connect: ioredis restores only subscriptions that once
  // succeeded, so one attempted while Redis was down (a server started before Redis) would
  // otherwise be missing for good. Both commands are idempotent.
  const subscribeAll = () => {
    void sub.subscribe(store.keys.resetChannel).catch((err: Error) => log?.warn({ err: err.message }, 'subscribe to reset failed'));
    for (const userId of users.keys()) {
      void sub.ssubscribe(store.keys.channel(userId)).catch((err: Error) => log?.warn({ userId, err: err.message }, 'ssubscribe failed'));
    }
  };
  subscribeAll();
  sub.on('ready', subscribeAll);

  const emitTotals = (state: UserState, t: BadgeTotals) => {
    // local: other servers emit to their own sockets from their own subscriptions.
    nsp.local.to(roomFor(state.userId)).emit(TOTAL_EVENT, payload(state.userId, t));
    emits++;
    // Same window as the total: the room map is read once per total emitted (never per change).
    void flushRooms(state);
  };

  // Sockets join this room only with their first (full) ROOMS_EVENT, so no delta can reach a
  // socket before its full state.
  const roomsRoomFor = (userId: string) => `${roomFor(userId)}#rooms`;

  const roomsPayload = (
    state: UserState,
    s: RoomState,
    full: boolean,
    baseSeq: number,
    rooms: Record<string, number>,
  ): RoomsUpdatedPayload => ({
    userId: state.userId,
    seq: s.seq,
    totalUnreadCount: s.total,
    unreadRooms: s.unreadRooms,
    full,
    baseSeq: full ? 0 : baseSeq,
    rooms,
  });

  /**
   * Reads the user's room map and sends what changed since the last send (one read in flight per
   * user; asks made meanwhile fold into one more read). Newcomers get the full map and join.
   */
  async function flushRooms(state: UserState): Promise<void> {
    if (state.roomsBusy) {
      state.roomsAgain = true;
      return;
    }
    state.roomsBusy = true;
    try {
      do {
        state.roomsAgain = false;
        let snap = await store.readRoomState(state.userId);
        if (!snap) {
          // Unknown (evicted, wiped): have the bridge load it, then read again.
          await reader.getCounts(state.userId);
          snap = await store.readRoomState(state.userId);
        }
        if (!snap || closed || users.get(state.userId) !== state) return;
        sendRooms(state, snap);
      } while (state.roomsAgain);
    } catch (err) {
      // Newcomers stay queued; the reconcile loop or the next change tries again.
      log?.debug({ userId: state.userId, err: (err as Error).message }, 'reading room map failed');
    } finally {
      state.roomsBusy = false;
    }
  }

  function sendRooms(state: UserState, snap: RoomState): void {
    const room = roomsRoomFor(state.userId);
    const sent = state.roomsSent;
    if (!sent || snap.seq > sent.seq || (state.roomsFull && snap.seq >= sent.seq)) {
      if (sent && !state.roomsFull) {
        nsp.local.to(room).emit(ROOMS_EVENT, roomsPayload(state, snap, false, sent.seq, roomsDelta(sent, snap)));
      } else {
        nsp.local.to(room).emit(ROOMS_EVENT, roomsPayload(state, snap, true, 0, roomCounts(snap)));
      }
      state.roomsSent = snap;
      state.roomsFull = false;
    }
    const current = state.roomsSent as RoomState;
    const waiting = state.newcomers;
    state.newcomers = [];
    for (const socket of waiting) {
      if (!socket.connected) continue;
      socket.emit(ROOMS_EVENT, roomsPayload(state, current, true, 0, roomCounts(current)));
      void socket.join(room);
    }
  }

  async function refreshUser(state: UserState, full = false): Promise<BadgeTotals | null> {
    try {
      const totals = await reader.getTotals(state.userId);
      if (users.get(state.userId) === state) {
        // A reset or reconnect, or a total newer than any publish we saw (one was missed): the
        // room map is sent in full, since deltas may have been lost with it.
        if (full || totals.seq > state.totals.knownSeq()) state.roomsFull = true;
        state.totals.offer(totals);
        if (state.newcomers.length > 0 || state.roomsFull) void flushRooms(state);
      }
      return totals;
    } catch (err) {
      log?.warn({ userId: state.userId, err: (err as Error).message }, 'refreshing badge failed');
      return null;
    }
  }

  async function refreshAll(full = true): Promise<void> {
    const all = [...users.values()];
    // Bounded batches: a reset with many users connected must not flood Redis at once.
    for (let i = 0; i < all.length; i += 500) await Promise.all(all.slice(i, i + 500).map((s) => refreshUser(s, full)));
  }

  function acquire(userId: string): UserState {
    let state = users.get(userId);
    if (!state) {
      const created: UserState = {
        userId,
        sockets: 0,
        subscribed: sub.ssubscribe(store.keys.channel(userId)).catch((err: Error) => {
          log?.warn({ userId, err: err.message }, 'ssubscribe failed');
        }),
        totals: new Coalescer<BadgeTotals>(coalesceMs, (t) => emitTotals(created, t)),
        roomsSent: null,
        roomsBusy: false,
        roomsAgain: false,
        roomsFull: false,
        newcomers: [],
      };
      state = created;
      users.set(userId, state);
    }
    state.sockets += 1;
    return state;
  }

  function release(state: UserState): void {
    state.sockets -= 1;
    if (state.sockets > 0 || users.get(state.userId) !== state) return;
    users.delete(state.userId);
    state.totals.cancel();
    if (!closed) {
      void sub.sunsubscribe(store.keys.channel(state.userId)).catch(() => {});
    }
  }

  nsp.use((socket, next) => {
    if (closed) return next(new Error('unavailable: unread badges are shutting down'));
    const token = tokenFromHandshake(socket.handshake);
    if (!token) return next(new Error('unauthorized: missing token (send auth.token or Authorization: Bearer)'));
    verify(token).then(
      (user) => {
        socket.data.unreadUserId = user.userId;
        socket.data.unreadExpiresAt = user.expiresAt;
        next();
      },
      (err: unknown) => next(new Error(err instanceof AuthError ? err.message : 'unauthorized')),
    );
  });

  const onConnection = (socket: Socket) => {
    const userId = socket.data.unreadUserId as string | undefined;
    if (!userId || closed) return; // another middleware let it through without our check: serve nothing
    const state = acquire(userId);
    let left = false;
    let expiry: NodeJS.Timeout | null = null;
    const expiresAt = socket.data.unreadExpiresAt as number;
    if (disconnectOnExpiry && expiresAt > 0) {
      expiry = setTimeout(
        () => {
          socket.emit('unread-auth-expired', { error: 'token expired; reconnect with a fresh token' });
          socket.disconnect(true);
        },
        Math.min(Math.max(expiresAt - Date.now(), 0), MAX_TIMEOUT),
      );
    }
    socket.once('disconnect', () => {
      left = true;
      if (expiry) clearTimeout(expiry);
      release(state);
    });

    // Per-socket limits for get-unread-counts: a token bucket answers excess requests with an
    // error at once (nothing queues), at most COUNTS_IN_FLIGHT reads run per socket, and a socket
    // that keeps flooding past its budget is disconnected. One socket then costs the server and
    // Redis a bounded amount whatever it sends.
    const countsLimit = { ...COUNTS_LIMIT_DEFAULTS, ...options.countsRateLimit };
    let tokens = countsLimit.burst;
    let refilledAt = Date.now();
    let inFlight = 0;
    let refusedInRow = 0;
    socket.on(COUNTS_EVENT, (...args: unknown[]) => {
      const ack = args.at(-1);
      if (typeof ack !== 'function') return;
      const reply = ack as (r: UnreadCountsReply | ErrorReply) => void;
      const now = Date.now();
      tokens = Math.min(countsLimit.burst, tokens + ((now - refilledAt) / 1000) * countsLimit.perSecond);
      refilledAt = now;
      if (tokens < 1 || inFlight >= COUNTS_IN_FLIGHT) {
        reply({
          error: `rate limited: at most ${countsLimit.perSecond} get-unread-counts per second (burst ${countsLimit.burst}); retry later`,
        });
        if (++refusedInRow === countsLimit.disconnectAfter) {
          log?.warn({ userId, refused: refusedInRow }, 'get-unread-counts flood: disconnecting the socket');
          socket.disconnect(true);
        }
        return;
      }
      tokens -= 1;
      refusedInRow = 0;
      const request = args.length > 1 ? args[0] : undefined;
      // Only one's own counts: a payload naming anyone else is refused outright.
      // Seed clients may send the id itself or { userId } / { user_id }.
      const asked =
        typeof request === 'string'
          ? request
          : request && typeof request === 'object'
            ? ((request as Record<string, unknown>).userId ?? (request as Record<string, unknown>).user_id)
            : undefined;
      if (asked !== undefined) {
        let same = false;
        try {
          same = parseUserId(asked) === userId;
        } catch {
          same = false;
        }
        if (!same) {
          reply({ error: 'forbidden: you can only read your own unread counts' });
          return;
        }
      }
      inFlight++;
      reader
        .getCounts(userId)
        .then(
          (c) => {
            if (users.get(userId) === state) state.totals.offer({ total: c.total, unreadRooms: c.unreadRooms, seq: c.seq });
            reply({ userId, totalUnreadCount: c.total, unreadRooms: c.unreadRooms, rooms: c.rooms, seq: c.seq });
          },
          (err: unknown) => {
            log?.warn({ userId, err: (err as Error).message }, 'get-unread-counts failed');
            reply({ error: 'unavailable: unread counts could not be read, retry shortly' });
          },
        )
        .finally(() => inFlight--);
    });

    // Subscribe first, then read: nothing published in between can be missed. While Redis is
    // down the subscription waits for it; read anyway after a moment (the database fallback may
    // answer) and read once more when the subscription is finally in place.
    let subscribedInTime = false;
    const subscribedOrLate = Promise.race([
      state.subscribed.then(() => {
        subscribedInTime = true;
      }),
      new Promise<void>((resolve) => setTimeout(resolve, SUBSCRIBE_WAIT_MS).unref()),
    ]);
    void state.subscribed.then(() => {
      if (!subscribedInTime && !left && users.get(userId) === state) void refreshUser(state);
    });
    void subscribedOrLate
      .then(() => reader.getTotals(userId))
      .then(
        (totals) => {
          if (left || users.get(userId) !== state) return;
          state.totals.hold(totals);
          // Flush first so the newcomer joins with nothing pending and never sees a seq twice or backwards.
          state.totals.flush();
          const best = state.totals.last ?? totals;
          socket.emit(TOTAL_EVENT, payload(userId, best));
          emits++;
          void socket.join(roomFor(userId));
          state.newcomers.push(socket);
          void flushRooms(state);
        },
        (err: unknown) => {
          log?.warn({ userId, err: (err as Error).message }, 'initial badge read failed');
          // Still join: the reconcile loop or the next change will deliver a total.
          if (!left) void socket.join(roomFor(userId));
        },
      );
  };
  nsp.on('connection', onConnection);

  let reconcileTimer: NodeJS.Timeout | null = null;
  const reconcileMs = options.reconcileIntervalMs ?? 5_000;
  if (reconcileMs > 0) {
    let running = false;
    reconcileTimer = setInterval(() => {
      if (running || users.size === 0) return;
      running = true;
      // refreshUser reads Redis (hydrating a wiped user); offer() drops anything already sent.
      refreshAll(false).finally(() => (running = false));
    }, reconcileMs);
    reconcileTimer.unref();
  }

  return {
    namespace: nsp,
    store,
    reader,
    emitCount: () => emits,
    roomFor,
    async sendTotalUnreadCount(id: string) {
      const userId = parseUserId(id);
      const state = users.get(userId);
      const totals = await reader.getTotals(userId);
      if (state && users.get(userId) === state) state.totals.offer(totals);
      return totals;
    },
    sendToUser(id: string, event: string, data: unknown) {
      nsp.to(roomFor(parseUserId(id))).emit(event, data);
    },
    refreshAll,
    connectedUsers: () => [...users.keys()],
    async close() {
      closed = true;
      nsp.off('connection', onConnection);
      if (reconcileTimer) clearInterval(reconcileTimer);
      for (const s of users.values()) s.totals.cancel();
      for (const socket of nsp.sockets.values()) if (socket.data.unreadUserId) socket.disconnect(true);
      users.clear();
      sub.disconnect();
    },
  };
}
