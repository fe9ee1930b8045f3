import { io, type Socket } from 'socket.io-client';
import { COUNTS_EVENT, countsReply, errorReply, ROOMS_EVENT, roomsPayload, TOTAL_EVENT, totalPayload } from './protocol.js';
import { hasGap, initialModel, reduce, roomsBehind, roomsExact, type ClientEvent, type ClientModel } from './state.js';
import { refreshDelayMs } from './token.js';
import type { UnreadBadgesClient, UnreadListener, UnreadState } from './types.js';

export interface ConnectUnreadBadgesOptions {
  /** Socket server origin, e.g. `https://badges.example.com` (browser: `location.origin`). */
  url: string;
  /** Returns the user's current access token (e.g. Supabase `session.access_token`); called for every connection. */
  getToken: () => string | Promise<string>;
  /** Socket.IO path; default `/socket.io`. */
  path?: string | undefined;
  /** Socket.IO namespace the badges are served on; default `/`. */
  namespace?: string | undefined;
  /** Open the next connection this long before the token expires; default 60 000 ms. */
  refreshBeforeExpiryMs?: number | undefined;
  /** Socket.IO transports; default Socket.IO's own (polling, upgraded to WebSocket). */
  transports?: Array<'polling' | 'websocket' | 'webtransport'> | undefined;
  /** How long a `get-unread-counts` request may take; default 5 000 ms. */
  requestTimeoutMs?: number | undefined;
  /** Problems that do not stop the client (refused connection, bad payload, failed resync). */
  onError?: ((err: Error) => void) | undefined;
}

/** How long totals may run ahead of rooms on a server that sends per-room events before asking for them. */
const ROOMS_GRACE_MS = 1_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;

interface Conn {
  socket: Socket;
  /** A full state arrived on this connection. */
  ready: boolean;
  /** The server sends `unread-rooms-updated` (so rooms follow totals without asking). */
  roomsEvents: boolean;
  token: string | null;
  refreshTimer: ReturnType<typeof setTimeout> | null;
  /** One `get-unread-counts` at a time per connection. */
  resyncing: boolean;
  resyncTimer: ReturnType<typeof setTimeout> | null;
}

/**
 * Live unread badges for one user over Socket.IO. Keeps the newest state by seq, resyncs with
 * `get-unread-counts` on every (re)connect and whenever a gap is seen, and replaces its connection
 * before the token expires: the next connection is opened with a fresh token and the old one is
 * closed only once the new one delivered a full state, so the shown state never blanks or goes back.
 */
export function connectUnreadBadges(options: ConnectUnreadBadgesOptions): UnreadBadgesClient {
  const refreshBefore = options.refreshBeforeExpiryMs ?? 60_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 5_000;
  const target = options.url.replace(/\/+$/, '') + (options.namespace && options.namespace !== '/' ? options.namespace : '');
  const report = (err: unknown) => {
    try {
      options.onError?.(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // A throwing error handler must not break the client.
    }
  };

  let model: ClientModel = initialModel();
  const listeners = new Set<UnreadListener>();
  let primary: Conn | null = null;
  let next: Conn | null = null;
  let closed = false;
  let failures = 0;
  let reopenTimer: ReturnType<typeof setTimeout> | null = null;
  let graceTimer: ReturnType<typeof setTimeout> | null = null;

  function dispatch(ev: ClientEvent): void {
    const before = model;
    model = reduce(model, ev);
    if (model.state !== before.state) {
      for (const l of [...listeners]) {
        try {
          l(model.state);
        } catch (err) {
          report(err);
        }
      }
    }
    checkRooms();
  }

  /**
   * Rooms not exact: ask now on a gap, or when totals ran ahead on a server that sends no per-room
   * events; otherwise give the server's next delta a grace period first.
   */
  function checkRooms(): void {
    if (closed) return;
    if (roomsExact(model)) {
      if (graceTimer) clearTimeout(graceTimer);
      graceTimer = null;
      return;
    }
    const conn = primary?.socket.connected ? primary : next?.socket.connected ? next : null;
    if (!conn) return; // the (re)connect resyncs anyway
    if (hasGap(model) || (roomsBehind(model) && !conn.roomsEvents)) {
      resync(conn);
    } else if (!graceTimer) {
      graceTimer = setTimeout(() => {
        graceTimer = null;
        if (!roomsExact(model) && conn.socket.connected) resync(conn);
      }, ROOMS_GRACE_MS);
    }
  }

  function backoff(): number {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(failures, 10));
    failures += 1;
    return base / 2 + Math.random() * (base / 2);
  }

  /** One `get-unread-counts` at a time; its reply is a full state. Retries with backoff on errors. */
  function resync(conn: Conn): void {
    if (conn.resyncing || conn.resyncTimer || closed) return;
    conn.resyncing = true;
    const retry = (err: Error) => {
      conn.resyncing = false;
      report(err);
      if (closed) return;
      conn.resyncTimer = setTimeout(() => {
        conn.resyncTimer = null;
        if (conn.socket.connected && (!conn.ready || !roomsExact(model))) resync(conn);
      }, backoff());
    };
    conn.socket.timeout(requestTimeoutMs).emit(COUNTS_EVENT, {}, (err: Error | null, reply: unknown) => {
      if (closed) return;
      if (err) return retry(new Error(`get-unread-counts: ${err.message}`));
      const ok = countsReply.safeParse(reply);
      if (!ok.success) {
        const e = errorReply.safeParse(reply);
        return retry(new Error(`get-unread-counts: ${e.success ? e.data.error : 'malformed reply'}`));
      }
      conn.resyncing = false;
      const r = ok.data;
      onFull(conn, { type: 'full', seq: r.seq, total: r.totalUnreadCount, unreadRooms: r.unreadRooms, rooms: r.rooms });
    });
  }

  function onFull(conn: Conn, ev: ClientEvent): void {
    conn.ready = true;
    failures = 0;
    if (conn === next) promote();
    dispatch(ev);
  }

  /** The new connection is live and has a full state: retire the old one. */
  function promote(): void {
    const old = primary;
    primary = next;
    next = null;
    if (old) retire(old);
  }

  function retire(conn: Conn): void {
    if (conn.refreshTimer) clearTimeout(conn.refreshTimer);
    if (conn.resyncTimer) clearTimeout(conn.resyncTimer);
    conn.refreshTimer = conn.resyncTimer = null;
    conn.socket.removeAllListeners();
    conn.socket.close();
  }

  /** Opens the next connection (first one, token refresh, or after the server dropped us). */
  function open(): void {
    if (closed || next) return;
    const conn: Conn = {
      socket: undefined as unknown as Socket,
      ready: false,
      roomsEvents: false,
      token: null,
      refreshTimer: null,
      resyncing: false,
      resyncTimer: null,
    };
    const socket = io(target, {
      forceNew: true,
      ...(options.path ? { path: options.path } : {}),
      ...(options.transports ? { transports: options.transports } : {}),
      // Called on every connection attempt, Socket.IO's own reconnects included: always a fresh token.
      auth: (cb: (data: object) => void) => {
        Promise.resolve()
          .then(() => options.getToken())
          .then(
            (token) => {
              conn.token = token;
              cb({ token });
            },
            (err: unknown) => {
              report(new Error(`getToken failed: ${(err as Error)?.message ?? String(err)}`));
              cb({});
            },
          );
      },
    });
    conn.socket = socket;
    next = conn;

    socket.on('connect', () => {
      conn.ready = false;
      conn.resyncing = false; // an ack from the previous transport never arrives
      scheduleRefresh(conn);
      resync(conn);
    });
    socket.on('connect_error', (err: Error) => {
      report(err);
      // Refused by the server (bad or expired token): Socket.IO will not retry by itself.
      if (!socket.active) reopenLater(conn);
    });
    socket.on('disconnect', (reason: string) => {
      if (conn === primary) dispatch({ type: 'disconnected' });
      // The server closed us (token expiry, shutdown): Socket.IO does not reconnect by itself.
      if (reason === 'io server disconnect' || !socket.active) reopenLater(conn);
    });
    socket.on(TOTAL_EVENT, (p: unknown) => {
      const r = totalPayload.safeParse(p);
      if (!r.success) return report(new Error(`${TOTAL_EVENT}: malformed payload dropped`));
      dispatch({ type: 'totals', seq: r.data.seq, total: r.data.totalUnreadCount, unreadRooms: r.data.unreadRooms });
    });
    socket.on(ROOMS_EVENT, (p: unknown) => {
      const r = roomsPayload.safeParse(p);
      if (!r.success) return report(new Error(`${ROOMS_EVENT}: malformed payload dropped`));
      conn.roomsEvents = true;
      const d = r.data;
      if (d.full) onFull(conn, { type: 'full', seq: d.seq, total: d.totalUnreadCount, unreadRooms: d.unreadRooms, rooms: d.rooms });
      else
        dispatch({ type: 'delta', seq: d.seq, baseSeq: d.baseSeq, total: d.totalUnreadCount, unreadRooms: d.unreadRooms, rooms: d.rooms });
    });
  }

  function scheduleRefresh(conn: Conn): void {
    if (conn.refreshTimer) clearTimeout(conn.refreshTimer);
    conn.refreshTimer = null;
    const delay = conn.token ? refreshDelayMs(conn.token, refreshBefore) : null;
    if (delay === null) return;
    conn.refreshTimer = setTimeout(() => {
      conn.refreshTimer = null;
      if (conn === primary) open();
    }, delay);
  }

  /** A connection that will not come back by itself: drop it and open a replacement after a backoff. */
  function reopenLater(conn: Conn): void {
    if (closed) return;
    if (conn === next) next = null;
    retire(conn);
    if (conn === primary) primary = null;
    if (reopenTimer) return;
    reopenTimer = setTimeout(() => {
      reopenTimer = null;
      open();
    }, backoff());
  }

  open();

  return {
    getState: () => model.state,
    subscribe(listener: UnreadListener) {
      listeners.add(listener);
      listener(model.state);
      return () => {
        listeners.delete(listener);
      };
    },
    close() {
      if (closed) return;
      closed = true;
      for (const t of [reopenTimer, graceTimer]) if (t) clearTimeout(t);
      for (const c of [primary, next]) if (c) retire(c);
      primary = next = null;
      listeners.clear();
    },
  };
}

export type { UnreadBadgesClient, UnreadListener, UnreadState };
