/**
 * TEST-ONLY stand-in for the Supabase Realtime server (the Elixir service
 * cannot run here). It speaks the Phoenix channels protocol that
 * @supabase/realtime-js v2 speaks and implements the "Broadcast from Database"
 * path: rows inserted into realtime.messages are pushed to joined channels.
 *
 * Behaviour mirrors supabase/realtime (RealtimeWeb.UserSocket, RealtimeChannel,
 * Tenants.Authorization, Tenants.ReplicationConnection, V2Serializer), with
 * these deliberate simplifications:
 *  - rows arrive through a NOTIFY trigger installed by realtime-shim.sql
 *    instead of a temporary logical replication slot (same commit-only
 *    visibility, same at-most-once delivery: no replay, no catch-up);
 *  - postgres_changes and broadcast replay are NOT emulated: joins asking for
 *    them are refused loudly instead of silently receiving nothing;
 *  - presence is acknowledged but not tracked (presence_state is always {});
 *  - no REST broadcast endpoint, no server-side heartbeat timeout.
 *
 * Switchable behaviours of the real server that decide whether a transport works in production
 * (all off by default; REAL_PROFILE has the real values):
 *  - `quota`: the per-project events-per-second limit (Tenants.events_per_second_rate +
 *    RateCounter): every broadcast row read from replication and every delivery to a subscriber
 *    counts; the average over the last `buckets` ticks is compared at each tick; while over the
 *    limit rows are dropped at the source (ReplicationConnection.check_rate_limit) and a channel
 *    that handles a delivery is shut with "Too many messages per second";
 *  - `replication`: the replication stream starts `startDelayMs` after the tenant connection
 *    starts (first join); rows committed before are never streamed; channels that asked for
 *    `replication_ready` get a system message when it is up, or are shut after `readyTimeoutMs`;
 *    faults.restartReplication() is a silent slot restart;
 *  - `joinErrorDelayMs`: RealtimeChannel.join_error sleeps before replying with an error (5 s).
 *
 * Requires test/support/realtime-shim.sql applied to the database
 * (see applyRealtimeShim) and a database user that can SET ROLE to the JWT
 * roles (a superuser, as the real server's connection effectively is).
 *
 * This file wires the server (HTTP upgrade, channels, quota, replication window, database stream);
 * the wire format is in codec.ts, tokens and RLS checks in auth.ts, fault injection in faults.ts.
 */
import { readFile } from 'node:fs/promises';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { createAuth, JoinRefused, upgradeErrors, type Claims, type Policies } from './auth.js';
import {
  decodeBinary,
  decodeText,
  encodeBroadcast,
  encodeText,
  isRecord,
  isUserPush,
  rawToBuffer,
  str,
  type Inbound,
  type Json,
  type OutBroadcast,
  type Vsn,
} from './codec.js';
import { createBroadcastOutput, createFaults, type RealtimeServerFaults } from './faults.js';

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

export interface StartRealtimeServerOptions {
  /** Connection string of the database that has realtime-shim.sql applied. */
  databaseUrl: string;
  /** HS256/384/512 secret used to verify the `apikey` and channel access tokens. */
  jwtSecret: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (random free port). */
  port?: number;
  /**
   * Create the realtime.messages daily partitions (yesterday..today+3) on start,
   * as the real server does on tenant connect. Default true; pass false to
   * reproduce the missing-partition trap.
   */
  createPartitions?: boolean;
  /** Random source for fault injection (inject a seeded PRNG for reproducible runs). */
  random?: () => number;
  /** Interval at which joined channels re-verify their token (real server: 5 min, or at `exp`). */
  tokenRecheckMs?: number;
  /** Diagnostics sink; silent by default. */
  logger?: (message: string, detail?: unknown) => void;
  /** Extra HTTP routes (e.g. a PostgREST rpc stand-in); return false to fall through to 404. */
  httpHandler?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
  /** Events-per-second quota (off when absent). */
  quota?: QuotaOptions;
  /** Replication start window (off when absent: the stream is live from the start). */
  replication?: ReplicationOptions;
  /** Delay before a join error reply (real server: CHANNEL_ERROR_BACKOFF_MS, 5000). Default 0. */
  joinErrorDelayMs?: number;
}

export interface QuotaOptions {
  /** Tenant max_events_per_second (real default 100; plans: Free 100, Pro 500). */
  eventsPerSecond: number;
  /** RateCounter tick (real: 5000 ms). */
  tickMs?: number;
  /** Buckets averaged (real: 12, i.e. 60 s with 5 s ticks). */
  buckets?: number;
  /**
   * Time between a row being read from replication and the channel process handling its delivery
   * (PubSub + mailbox). A delivery handled after the tick that crossed the limit shuts its channel.
   * Default 1 ms.
   */
  channelLagMs?: number;
}

export interface ReplicationOptions {
  /** How long after the tenant connection starts (first join) the replication stream is live. */
  startDelayMs: number;
  /** Channels with replication_ready are shut if the stream is not live by then (real: 60 000). */
  readyTimeoutMs?: number;
}

/** The real server's values (supabase/realtime config/runtime.exs, config.exs, tenants.ex). */
export const REAL_PROFILE = {
  joinErrorDelayMs: 5_000,
  quota: { eventsPerSecond: 100, tickMs: 5_000, buckets: 12, channelLagMs: 1 },
  replication: { startDelayMs: 0, readyTimeoutMs: 60_000 },
} as const satisfies Pick<StartRealtimeServerOptions, 'joinErrorDelayMs' | 'quota' | 'replication'>;

/** Live counters (the object is mutated in place). */
export interface RealtimeServerStats {
  /** Websocket connections accepted. */
  connections: number;
  /** Upgrades refused (bad apikey, bad vsn, dropConnections outage window). */
  rejectedConnections: number;
  /** Sockets killed by faults.dropConnections. */
  droppedConnections: number;
  /** Successful phx_join replies. */
  joins: number;
  /** phx_join answered with an error reply. */
  refusedJoins: number;
  leaves: number;
  heartbeats: number;
  /** Rows received from realtime.messages (any extension). */
  dbMessages: number;
  /** Broadcasts pushed by clients over the socket. */
  clientBroadcasts: number;
  /** Broadcast frames written to sockets (duplicates included). */
  delivered: number;
  /** Broadcast frames discarded by faults.dropRate. */
  dropped: number;
  /** Extra copies produced by faults.duplicateRate. */
  duplicated: number;
  /** Broadcast frames that could not be sent (socket gone, binary payload to a vsn 1.0.0 client, oversize header). */
  undeliverable: number;
  /** Events counted against the quota (rows read + deliveries). */
  quotaCounted: number;
  /** Rows dropped at the source because the quota was triggered. */
  rateLimitedRows: number;
  /** Channels shut with "Too many messages per second". */
  rateLimitShutdowns: number;
  /** Times the quota went from under to over the limit (MessagePerSecondRateLimitReached logs). */
  rateLimitEpisodes: number;
  /** Rows committed while the replication stream was not live (never streamed). */
  notStreamed: number;
  /** replication_ready system messages sent / channels shut because replication did not start in time. */
  replicationReadySent: number;
  replicationTimeouts: number;
}

export interface RealtimeServer {
  /** SUPABASE_URL-style base, e.g. http://127.0.0.1:PORT (give this to supabase-js createClient). */
  url: string;
  /** Realtime endpoint for `new RealtimeClient(realtimeUrl, ...)`: ws://127.0.0.1:PORT/realtime/v1 */
  realtimeUrl: string;
  port: number;
  faults: RealtimeServerFaults;
  stats: RealtimeServerStats;
  /** Number of joined channels, optionally only those for `topic` (without the "realtime:" prefix). */
  subscriberCount(topic?: string, isPrivate?: boolean): number;
  /** The quota counter as the server sees it (avg events/s over the window, triggered). */
  quotaState(): { avg: number; triggered: boolean; limit: number | null };
  /** Whether the replication stream is live now. */
  replicationLive(): boolean;
  close(): Promise<void>;
}

export const SHIM_SQL_PATH = fileURLToPath(new URL('../realtime-shim.sql', import.meta.url));

/** Apply test/support/realtime-shim.sql to a database (idempotent). */
export async function applyRealtimeShim(databaseUrl: string): Promise<void> {
  const text = await readFile(SHIM_SQL_PATH, 'utf8');
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(text); // simple query protocol: multi-statement script is fine
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

type Sql = postgres.Sql;

interface Conn {
  id: number;
  ws: WebSocket;
  vsn: Vsn;
  apikey: string;
  channels: Map<string, Sub>;
  queue: Promise<void>;
  held: Array<string | Buffer>;
  heldTimer: NodeJS.Timeout | null;
  closed: boolean;
}

interface Sub {
  conn: Conn;
  topic: string;
  subTopic: string;
  joinRef: string | null;
  isPrivate: boolean;
  presenceEnabled: boolean;
  selfBroadcast: boolean;
  ackBroadcast: boolean;
  accessToken: string;
  claims: Claims;
  policies: Policies | null;
  tokenTimer: NodeJS.Timeout | null;
  /** replication_ready opt-in: deadline (ms epoch) until the system message is sent, null once sent or not asked. */
  readyDeadline: number | null;
}

const NOTIFY_CHANNEL = 'realtime_shim_messages';
const WS_PATHS = [/\/realtime\/v1\/websocket$/, /^\/socket\/websocket$/];

export async function startRealtimeServer(opts: StartRealtimeServerOptions): Promise<RealtimeServer> {
  const log = opts.logger ?? (() => {});
  const random = opts.random ?? Math.random;
  const tokenRecheckMs = opts.tokenRecheckMs ?? 5 * 60_000;
  const joinErrorDelayMs = opts.joinErrorDelayMs ?? 0;

  const sql: Sql = postgres(opts.databaseUrl, {
    max: 5,
    onnotice: () => {},
    connection: { application_name: 'realtime-stand-in' },
  });

  try {
    await sql`select 1 from realtime.messages limit 0`;
  } catch (err) {
    await sql.end({ timeout: 1 });
    throw new Error(
      `realtime stand-in: cannot use realtime.messages at ${opts.databaseUrl} (${(err as Error).message}). ` +
        `Apply test/support/realtime-shim.sql first (applyRealtimeShim()).`,
    );
  }
  if (opts.createPartitions !== false) {
    await sql`select realtime_shim.create_messages_partitions()`;
  }
  const { verifyToken, readPolicies, broadcastWritePolicy } = createAuth({ sql, jwtSecret: opts.jwtSecret, log });

  const stats: RealtimeServerStats = {
    connections: 0,
    rejectedConnections: 0,
    droppedConnections: 0,
    joins: 0,
    refusedJoins: 0,
    leaves: 0,
    heartbeats: 0,
    dbMessages: 0,
    clientBroadcasts: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    undeliverable: 0,
    quotaCounted: 0,
    rateLimitedRows: 0,
    rateLimitShutdowns: 0,
    rateLimitEpisodes: 0,
    notStreamed: 0,
    replicationReadySent: 0,
    replicationTimeouts: 0,
  };

  // --- quota (Tenants.events_per_second_rate + RateCounter) -----------------------
  const quota = opts.quota
    ? {
        limit: opts.quota.eventsPerSecond,
        tickMs: opts.quota.tickMs ?? 5_000,
        buckets: opts.quota.buckets ?? 12,
        lagMs: opts.quota.channelLagMs ?? 1,
      }
    : null;
  let quotaCount = 0;
  let quotaBucket: number[] = [];
  let quotaAvg = 0;
  let quotaTriggered = false;
  const quotaTimer = quota
    ? setInterval(() => {
        // RateCounter.handle_info(:tick): newest count first, at most max_bucket_len, avg per second.
        quotaBucket = [quotaCount, ...quotaBucket].slice(0, quota.buckets);
        quotaCount = 0;
        quotaAvg = quotaBucket.reduce((a, b) => a + b, 0) / quotaBucket.length / (quota.tickMs / 1000);
        if (quotaTriggered) {
          if (quotaAvg < quota.limit) quotaTriggered = false;
        } else if (quotaAvg >= quota.limit) {
          quotaTriggered = true;
          stats.rateLimitEpisodes++;
          log('MessagePerSecondRateLimitReached: Too many messages per second', { avg: quotaAvg });
        }
      }, quota.tickMs)
    : null;
  quotaTimer?.unref();
  function countEvent(): void {
    if (!quota) return;
    quotaCount++;
    stats.quotaCounted++;
  }

  // --- replication start (Connect -> async ReplicationConnection; RealtimeChannel replication_ready)
  const replicationReadyTimeoutMs = opts.replication?.readyTimeoutMs ?? 60_000;
  /** ms epoch from which the stream is live; null = tenant connection not started yet. */
  let replicationLiveAt: number | null = opts.replication ? null : 0;
  const replicationLive = (): boolean => replicationLiveAt !== null && Date.now() >= replicationLiveAt;
  function startTenant(): void {
    if (replicationLiveAt === null) replicationLiveAt = Date.now() + (opts.replication?.startDelayMs ?? 0);
  }
  // Channels that asked for replication_ready are checked like notify_replication_ready (every 500 ms there).
  const readyTimer = setInterval(() => {
    const now = Date.now();
    for (const conn of conns) {
      for (const sub of [...conn.channels.values()]) {
        if (sub.readyDeadline === null) continue;
        if (replicationLive()) {
          sub.readyDeadline = null;
          stats.replicationReadySent++;
          push(sub, 'system', { extension: 'system', status: 'ok', message: 'Replication connection established', channel: sub.subTopic });
        } else if (now >= sub.readyDeadline) {
          stats.replicationTimeouts++;
          shutdown(sub, 'Replication connection was not established in time');
        }
      }
    }
  }, 50);
  readyTimer.unref();

  const conns = new Set<Conn>();
  /** `${private|public}:${subTopic}` -> joined channels; private and public topics never mix (Tenants.tenant_topic). */
  const index = new Map<string, Set<Sub>>();
  const keyOf = (isPrivate: boolean, subTopic: string): string => `${isPrivate ? 'private' : 'public'}:${subTopic}`;
  let refuseUntil = 0;
  let nextConnId = 1;
  let closing = false;

  // --- output (broadcasts through the faults) --------------------------------------

  const faults: RealtimeServerFaults = createFaults({
    cutConnections(until: number): void {
      refuseUntil = until;
      for (const conn of [...conns]) {
        stats.droppedConnections++;
        conn.ws.terminate(); // abrupt: no close frame, like a network cut
      }
    },
    endRefusal(): void {
      refuseUntil = 0;
    },
    crashChannels(topic?: string): number {
      let n = 0;
      for (const conn of conns) {
        for (const sub of [...conn.channels.values()]) {
          if (topic !== undefined && sub.subTopic !== topic) continue;
          push(sub, 'phx_error', {}, sub.joinRef);
          removeSub(sub);
          n++;
        }
      }
      return n;
    },
    restartReplication(ms: number): void {
      replicationLiveAt = Date.now() + ms;
    },
  });
  const output = createBroadcastOutput(faults, random, stats);

  function sendRaw(conn: Conn, frame: string | Buffer): void {
    if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(frame, { binary: typeof frame !== 'string' });
  }

  function reply(conn: Conn, msg: Inbound, status: 'ok' | 'error', response: Json): void {
    sendRaw(conn, encodeText(conn.vsn, msg.joinRef, msg.ref, msg.topic, 'phx_reply', { status, response }));
  }

  function push(sub: Sub, event: string, payload: Json, ref: string | null = null): void {
    sendRaw(sub.conn, encodeText(sub.conn.vsn, sub.joinRef, ref, sub.topic, event, payload));
  }

  /** Every broadcast to a subscriber goes through here so faults apply uniformly. */
  function deliver(sub: Sub, msg: OutBroadcast): void {
    if (quota) {
      // MessageDispatcher sends :update_rate_counter; the channel counts it and, if the counter is
      // triggered by the time it handles it, shuts down (RealtimeChannel.handle_info(:update_rate_counter)).
      countEvent();
      setTimeout(() => {
        if (quotaTriggered && sub.conn.channels.get(sub.topic) === sub) {
          stats.rateLimitShutdowns++;
          shutdown(sub, 'Too many messages per second');
        }
      }, quota.lagMs).unref();
    }
    const frame = encodeBroadcast(sub.conn.vsn, sub.topic, msg);
    if (frame === null) {
      stats.undeliverable++;
      return;
    }
    output.send(sub.conn, frame);
  }

  // --- channel lifecycle -----------------------------------------------------------

  function removeSub(sub: Sub): void {
    if (sub.tokenTimer) clearTimeout(sub.tokenTimer);
    sub.tokenTimer = null;
    if (sub.conn.channels.get(sub.topic) === sub) sub.conn.channels.delete(sub.topic);
    const key = keyOf(sub.isPrivate, sub.subTopic);
    const set = index.get(key);
    set?.delete(sub);
    if (set && set.size === 0) index.delete(key);
  }

  /** shutdown_response: system error message, then the channel process stops (phx_close). */
  function shutdown(sub: Sub, message: string): void {
    push(sub, 'system', { extension: 'system', status: 'error', message, channel: sub.subTopic });
    push(sub, 'phx_close', {}, sub.joinRef);
    removeSub(sub);
  }

  /** confirm_token timer: re-verify every tokenRecheckMs or exactly at exp, whichever is first. */
  function armTokenTimer(sub: Sub): void {
    if (sub.tokenTimer) clearTimeout(sub.tokenTimer);
    const untilExp = sub.claims.exp * 1000 - Date.now();
    sub.tokenTimer = setTimeout(
      () => {
        sub.tokenTimer = null;
        void verifyToken(sub.accessToken).then((res) => {
          if (sub.conn.channels.get(sub.topic) !== sub) return;
          if (res.ok) {
            sub.claims = res.claims;
            armTokenTimer(sub);
          } else {
            shutdown(sub, res.reason === 'signature' ? ':signature_error' : res.message);
          }
        });
      },
      Math.max(0, Math.min(tokenRecheckMs, untilExp)),
    );
    sub.tokenTimer.unref();
  }

  async function handleJoin(conn: Conn, msg: Inbound): Promise<void> {
    const refuse = async (reason: string): Promise<void> => {
      stats.refusedJoins++;
      log('join refused', { topic: msg.topic, reason });
      // join_error: the channel process sleeps before answering; the socket waits for it.
      if (joinErrorDelayMs > 0) await new Promise((r) => setTimeout(r, joinErrorDelayMs));
      reply(conn, msg, 'error', { reason });
    };
    if (!msg.topic.startsWith('realtime:')) return refuse('unmatched topic');
    const subTopic = msg.topic.slice('realtime:'.length);
    if (subTopic === '') return refuse('TopicNameRequired: You must provide a topic name');

    const payload: Json = isUserPush(msg.payload) ? {} : msg.payload;
    const config = isRecord(payload.config) ? payload.config : {};
    const broadcast = isRecord(config.broadcast) ? config.broadcast : {};
    const presence = isRecord(config.presence) ? config.presence : {};
    const isPrivate = config.private === true;
    const presenceEnabled = presence.enabled === true;

    if (Array.isArray(config.postgres_changes) && config.postgres_changes.length > 0) {
      return refuse('NotEmulated: postgres_changes is not supported by the test stand-in server');
    }
    if (broadcast.replay !== undefined) {
      return refuse(
        isPrivate
          ? 'NotEmulated: broadcast replay is not supported by the test stand-in server'
          : 'UnableToReplayMessages: Replay is not allowed for public channels',
      );
    }

    // assign_access_token: sb_* publishable keys and a missing token fall back to the socket's apikey
    const rawToken = str(payload.access_token) ?? str(payload.user_token);
    const accessToken = rawToken && !rawToken.startsWith('sb_') ? rawToken : conn.apikey;
    const token = await verifyToken(accessToken);
    if (!token.ok) return refuse(`${token.code}: ${token.message}`);

    let policies: Policies | null = null;
    if (isPrivate) {
      try {
        policies = await readPolicies(subTopic, token.claims, presenceEnabled, null);
      } catch (err) {
        if (err instanceof JoinRefused) return refuse(err.message);
        throw err;
      }
      if (!policies.broadcastRead && !policies.presenceRead) {
        return refuse(`Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}`);
      }
    }
    if (conn.closed) return;

    // Duplicate join on the same socket replaces the old channel (Phoenix does the same).
    const existing = conn.channels.get(msg.topic);
    if (existing) removeSub(existing);

    const sub: Sub = {
      conn,
      topic: msg.topic,
      subTopic,
      joinRef: msg.joinRef,
      isPrivate,
      presenceEnabled,
      selfBroadcast: broadcast.self === true,
      ackBroadcast: broadcast.ack === true,
      accessToken,
      claims: token.claims,
      policies,
      tokenTimer: null,
      readyDeadline: broadcast.replication_ready === true ? Date.now() + replicationReadyTimeoutMs : null,
    };
    startTenant(); // Connect.lookup_or_start_connection: the first join starts replication (asynchronously)
    conn.channels.set(msg.topic, sub);
    const key = keyOf(isPrivate, subTopic);
    let set = index.get(key);
    if (!set) index.set(key, (set = new Set()));
    set.add(sub); // subscribed before the ok reply, like the real channel
    armTokenTimer(sub);
    stats.joins++;
    reply(conn, msg, 'ok', { postgres_changes: [] });
    if (presenceEnabled) push(sub, 'presence_state', {});
  }

  async function handleAccessToken(sub: Sub, msg: Inbound): Promise<void> {
    const token = isUserPush(msg.payload) ? null : str(msg.payload.access_token);
    if (token === null || token.startsWith('sb_') || token === sub.accessToken) return;
    const res = await verifyToken(token);
    if (sub.conn.channels.get(sub.topic) !== sub) return;
    if (!res.ok) return shutdown(sub, res.reason === 'signature' ? ':signature_error' : res.message);
    sub.accessToken = token;
    sub.claims = res.claims;
    if (sub.isPrivate) {
      const previous = sub.policies;
      let next: Policies;
      try {
        next = await readPolicies(sub.subTopic, res.claims, sub.presenceEnabled, previous);
      } catch (err) {
        return shutdown(sub, err instanceof JoinRefused ? err.message.replace(/^\w+: /, '') : String(err));
      }
      if (sub.conn.channels.get(sub.topic) !== sub) return;
      const revoked =
        (previous?.broadcastRead === true && next.broadcastRead === false) ||
        (previous?.presenceRead === true && next.presenceRead === false);
      if (revoked) return shutdown(sub, `You no longer have permission to read from this Channel topic: ${sub.subTopic}`);
      if (!next.broadcastRead && !next.presenceRead) {
        return shutdown(sub, `You do not have permissions to read from this Channel topic: ${sub.subTopic}`);
      }
      sub.policies = next;
    }
    armTokenTimer(sub);
  }

  async function handleClientBroadcast(sub: Sub, msg: Inbound): Promise<void> {
    if (sub.isPrivate && sub.policies) {
      if (sub.policies.broadcastWrite === null) sub.policies.broadcastWrite = await broadcastWritePolicy(sub);
      if (!sub.policies.broadcastWrite) return; // real server: silently not sent, no ack
    }
    stats.clientBroadcasts++;
    const p = msg.payload;
    const out: OutBroadcast = isUserPush(p)
      ? { kind: 'user', event: p.event, encoding: p.encoding, body: p.body, meta: null }
      : { kind: 'map', payload: p };
    for (const target of index.get(keyOf(sub.isPrivate, sub.subTopic)) ?? []) {
      if (target === sub && !sub.selfBroadcast) continue;
      if (target.isPrivate && target.policies?.broadcastRead !== true) continue;
      deliver(target, out);
    }
    if (sub.ackBroadcast) reply(sub.conn, msg, 'ok', {});
  }

  async function handleMessage(conn: Conn, msg: Inbound): Promise<void> {
    if (msg.topic === 'phoenix' && msg.event === 'heartbeat') {
      stats.heartbeats++;
      return reply(conn, msg, 'ok', {});
    }
    if (msg.event === 'phx_join') return handleJoin(conn, msg);
    const sub = conn.channels.get(msg.topic);
    if (!sub) return reply(conn, msg, 'error', { reason: 'unmatched topic' });
    switch (msg.event) {
      case 'phx_leave':
        stats.leaves++;
        reply(conn, msg, 'ok', {});
        push(sub, 'phx_close', {}, sub.joinRef);
        return removeSub(sub);
      case 'access_token':
        return handleAccessToken(sub, msg);
      case 'broadcast':
        return handleClientBroadcast(sub, msg);
      case 'presence':
        return reply(conn, msg, 'ok', {}); // acknowledged, not tracked
      default:
        log('unexpected client message', { topic: msg.topic, event: msg.event });
    }
  }

  // --- database stream -------------------------------------------------------------

  interface RowNote {
    id: string;
    inserted_at: string;
    fetch?: boolean;
    topic?: unknown;
    extension?: unknown;
    event?: unknown;
    private?: unknown;
    payload?: unknown;
    binary_payload?: unknown;
  }

  /** ReplicationConnection's Insert handler: one row -> UserBroadcast to `topic` on the matching private/public side. */
  function dispatchRow(row: RowNote): void {
    if (!replicationLive()) {
      // Committed while no replication slot streamed: the slot starts after it, never sees it.
      stats.notStreamed++;
      return;
    }
    stats.dbMessages++;
    if (row.extension !== 'broadcast') return;
    if (quotaTriggered) {
      // ReplicationConnection.check_rate_limit: dropped, logged as UnableToBroadcastChanges.
      stats.rateLimitedRows++;
      return;
    }
    countEvent(); // GenCounter.add(events_per_second_rate.id) for the row read
    const topic = str(row.topic);
    const event = str(row.event);
    if (topic === null || event === null || typeof row.private !== 'boolean') {
      log('UnableToBroadcastChanges: missing topic/event/private', row);
      return;
    }
    let out: OutBroadcast;
    const meta = { id: row.id };
    if (typeof row.binary_payload === 'string') {
      out = { kind: 'user', event, encoding: 'binary', body: Buffer.from(row.binary_payload, 'base64'), meta };
    } else if (row.payload !== null && row.payload !== undefined) {
      out = { kind: 'user', event, encoding: 'json', body: Buffer.from(JSON.stringify(row.payload), 'utf8'), meta };
    } else {
      log('UnableToBroadcastChanges: payload_missing', row);
      return;
    }
    for (const sub of index.get(keyOf(row.private, topic)) ?? []) {
      // MessageDispatcher: private subscribers need broadcast read permission
      if (sub.isPrivate && sub.policies?.broadcastRead !== true) continue;
      deliver(sub, out);
    }
  }

  // Sequential so rows are fanned out in commit (NOTIFY) order even when one must be fetched.
  let rowQueue: Promise<void> = Promise.resolve();
  function onNotify(raw: string): void {
    let note: RowNote;
    try {
      note = JSON.parse(raw) as RowNote;
    } catch (err) {
      log('bad notification', err);
      return;
    }
    rowQueue = rowQueue
      .then(async () => {
        let row = note;
        if (note.fetch) {
          const rows = await sql`
            select id::text as id, inserted_at::text as inserted_at, topic, extension, event, private, payload,
                   encode(binary_payload, 'base64') as binary_payload
            from realtime.messages where id = ${note.id}::uuid and inserted_at = ${note.inserted_at}::text::timestamp`;
          // (::text first: bound straight to a timestamp, postgres.js would cut the microseconds.)
          const first = rows[0];
          if (!first) return;
          row = first as unknown as RowNote;
        }
        if (!closing) dispatchRow(row);
      })
      .catch((err: unknown) => log('failed to dispatch row', err));
  }

  const listener = await sql.listen(NOTIFY_CHANNEL, onNotify);

  // --- websocket transport --------------------------------------------------------

  const wss = new WebSocketServer({ noServer: true });
  const http = createServer(async (req, res) => {
    if (opts.httpHandler && (await opts.httpHandler(req, res).catch(() => false))) return;
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'Not found (test stand-in only serves the websocket endpoint)' }));
  });

  function rejectUpgrade(socket: Duplex, status: number, error: string): void {
    stats.rejectedConnections++;
    const body = JSON.stringify({ error });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }

  /** UserSocket.connect: apikey must be a valid JWT or the upgrade is refused with 401 (upgradeErrors). */
  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', (err) => log('upgrade socket error', err));
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname.replace(/\/+$/, '');
    if (closing || !WS_PATHS.some((re) => re.test(path))) return rejectUpgrade(socket, 404, 'Not found');
    if (Date.now() < refuseUntil) return rejectUpgrade(socket, 503, 'Service unavailable (faults.dropConnections)');
    const vsnParam = url.searchParams.get('vsn') ?? '1.0.0'; // Phoenix default when absent
    if (vsnParam !== '1.0.0' && vsnParam !== '2.0.0') {
      return rejectUpgrade(
        socket,
        403,
        `The client's requested transport version "${vsnParam}" does not match server's version requirements`,
      );
    }
    const headerKey = req.headers['x-api-key'];
    const apikey = (typeof headerKey === 'string' ? headerKey : null) ?? url.searchParams.get('apikey');
    if (!apikey) return rejectUpgrade(socket, 401, 'API key is missing');
    const check = await verifyToken(apikey);
    if (!check.ok) return rejectUpgrade(socket, 401, upgradeErrors[check.reason]);
    if (closing || Date.now() < refuseUntil) return rejectUpgrade(socket, 503, 'Service unavailable');
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, vsnParam, apikey));
  }

  function onConnection(ws: WebSocket, vsn: Vsn, apikey: string): void {
    const conn: Conn = {
      id: nextConnId++,
      ws,
      vsn,
      apikey,
      channels: new Map(),
      queue: Promise.resolve(),
      held: [],
      heldTimer: null,
      closed: false,
    };
    conns.add(conn);
    stats.connections++;
    ws.on('error', (err) => log('websocket error', err));
    ws.on('message', (data: RawData, isBinary: boolean) => {
      let msg: Inbound;
      try {
        const buf = rawToBuffer(data);
        msg = isBinary ? decodeBinary(buf) : decodeText(vsn, buf.toString('utf8'));
      } catch (err) {
        log('undecodable frame, closing socket', err);
        ws.close(1003, 'invalid frame');
        return;
      }
      // Handle in arrival order per socket (joins await the database).
      conn.queue = conn.queue
        .then(() => (conn.closed ? undefined : handleMessage(conn, msg)))
        .catch((err: unknown) => log('error handling message', err));
    });
    ws.on('close', () => {
      conn.closed = true;
      conns.delete(conn);
      if (conn.heldTimer) clearTimeout(conn.heldTimer);
      stats.undeliverable += conn.held.length;
      conn.held = [];
      for (const sub of [...conn.channels.values()]) removeSub(sub);
    });
  }

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    onUpgrade(req, socket, head).catch((err: unknown) => {
      log('upgrade failed', err);
      socket.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      http.off('error', reject);
      resolve();
    });
  });
  const { port } = http.address() as AddressInfo;
  const host = opts.host ?? '127.0.0.1';

  return {
    url: `http://${host}:${port}`,
    realtimeUrl: `ws://${host}:${port}/realtime/v1`,
    port,
    faults,
    stats,
    subscriberCount(topic?: string, isPrivate?: boolean): number {
      let n = 0;
      for (const [key, set] of index) {
        const [side, ...rest] = key.split(':');
        if (topic !== undefined && rest.join(':') !== topic) continue;
        if (isPrivate !== undefined && (side === 'private') !== isPrivate) continue;
        n += set.size;
      }
      return n;
    },
    quotaState() {
      return { avg: quotaAvg, triggered: quotaTriggered, limit: quota?.limit ?? null };
    },
    replicationLive,
    async close(): Promise<void> {
      if (closing) return;
      closing = true;
      if (quotaTimer) clearInterval(quotaTimer);
      clearInterval(readyTimer);
      for (const conn of [...conns]) {
        for (const sub of [...conn.channels.values()]) removeSub(sub);
        if (conn.heldTimer) clearTimeout(conn.heldTimer);
        conn.ws.terminate();
      }
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      await listener.unlisten().catch(() => {});
      await rowQueue;
      await sql.end({ timeout: 2 });
    },
  };
}
