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
 */
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose'
import postgres from 'postgres'
import { WebSocket, WebSocketServer, type RawData } from 'ws'

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

export interface StartRealtimeServerOptions {
  /** Connection string of the database that has realtime-shim.sql applied. */
  databaseUrl: string
  /** HS256/384/512 secret used to verify the `apikey` and channel access tokens. */
  jwtSecret: string
  /** Default 127.0.0.1. */
  host?: string
  /** Default 0 (random free port). */
  port?: number
  /**
   * Create the realtime.messages daily partitions (yesterday..today+3) on start,
   * as the real server does on tenant connect. Default true; pass false to
   * reproduce the missing-partition trap.
   */
  createPartitions?: boolean
  /** Random source for fault injection (inject a seeded PRNG for reproducible runs). */
  random?: () => number
  /** Interval at which joined channels re-verify their token (real server: 5 min, or at `exp`). */
  tokenRecheckMs?: number
  /** Diagnostics sink; silent by default. */
  logger?: (message: string, detail?: unknown) => void
  /** Extra HTTP routes (e.g. a PostgREST rpc stand-in); return false to fall through to 404. */
  httpHandler?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>
  /** Events-per-second quota (off when absent). */
  quota?: QuotaOptions
  /** Replication start window (off when absent: the stream is live from the start). */
  replication?: ReplicationOptions
  /** Delay before a join error reply (real server: CHANNEL_ERROR_BACKOFF_MS, 5000). Default 0. */
  joinErrorDelayMs?: number
}

export interface QuotaOptions {
  /** Tenant max_events_per_second (real default 100; plans: Free 100, Pro 500). */
  eventsPerSecond: number
  /** RateCounter tick (real: 5000 ms). */
  tickMs?: number
  /** Buckets averaged (real: 12, i.e. 60 s with 5 s ticks). */
  buckets?: number
  /**
   * Time between a row being read from replication and the channel process handling its delivery
   * (PubSub + mailbox). A delivery handled after the tick that crossed the limit shuts its channel.
   * Default 1 ms.
   */
  channelLagMs?: number
}

export interface ReplicationOptions {
  /** How long after the tenant connection starts (first join) the replication stream is live. */
  startDelayMs: number
  /** Channels with replication_ready are shut if the stream is not live by then (real: 60 000). */
  readyTimeoutMs?: number
}

/** The real server's values (supabase/realtime config/runtime.exs, config.exs, tenants.ex). */
export const REAL_PROFILE = {
  joinErrorDelayMs: 5_000,
  quota: { eventsPerSecond: 100, tickMs: 5_000, buckets: 12, channelLagMs: 1 },
  replication: { startDelayMs: 0, readyTimeoutMs: 60_000 },
} as const satisfies Pick<StartRealtimeServerOptions, 'joinErrorDelayMs' | 'quota' | 'replication'>

/** Fault injection knobs. They only affect broadcast messages, never replies/heartbeats. */
export interface RealtimeServerFaults {
  /**
   * Abruptly terminate every websocket and refuse (HTTP 503) new upgrades for `ms`.
   * Resolves when the outage window ends.
   */
  dropConnections(ms: number): Promise<void>
  /** Probability 0..1 that a message to one subscriber is silently dropped. */
  dropRate: number
  /** Probability 0..1 that a message to one subscriber is sent twice. */
  duplicateRate: number
  /** Hold up to N messages per socket and flush them shuffled (0/1 = off). */
  reorderWindow: number
  /** A partially filled reorder window is flushed after this many ms (default 50). */
  reorderFlushMs: number
  /** Extra delay before each message is written to the socket (default 0). */
  latencyMs: number
  /** Push phx_error to matching joined channels (server-side channel crash); the client rejoins. Returns how many. */
  crashChannels(topic?: string): number
  /** Silent replication slot restart: nothing committed in the next `ms` is streamed; channels are not told. */
  restartReplication(ms: number): void
  /** Restore all knobs to their defaults. */
  reset(): void
}

/** Live counters (the object is mutated in place). */
export interface RealtimeServerStats {
  /** Websocket connections accepted. */
  connections: number
  /** Upgrades refused (bad apikey, bad vsn, dropConnections outage window). */
  rejectedConnections: number
  /** Sockets killed by faults.dropConnections. */
  droppedConnections: number
  /** Successful phx_join replies. */
  joins: number
  /** phx_join answered with an error reply. */
  refusedJoins: number
  leaves: number
  heartbeats: number
  /** Rows received from realtime.messages (any extension). */
  dbMessages: number
  /** Broadcasts pushed by clients over the socket. */
  clientBroadcasts: number
  /** Broadcast frames written to sockets (duplicates included). */
  delivered: number
  /** Broadcast frames discarded by faults.dropRate. */
  dropped: number
  /** Extra copies produced by faults.duplicateRate. */
  duplicated: number
  /** Broadcast frames that could not be sent (socket gone, binary payload to a vsn 1.0.0 client, oversize header). */
  undeliverable: number
  /** Events counted against the quota (rows read + deliveries). */
  quotaCounted: number
  /** Rows dropped at the source because the quota was triggered. */
  rateLimitedRows: number
  /** Channels shut with "Too many messages per second". */
  rateLimitShutdowns: number
  /** Times the quota went from under to over the limit (MessagePerSecondRateLimitReached logs). */
  rateLimitEpisodes: number
  /** Rows committed while the replication stream was not live (never streamed). */
  notStreamed: number
  /** replication_ready system messages sent / channels shut because replication did not start in time. */
  replicationReadySent: number
  replicationTimeouts: number
}

export interface RealtimeServer {
  /** SUPABASE_URL-style base, e.g. http://127.0.0.1:PORT (give this to supabase-js createClient). */
  url: string
  /** Realtime endpoint for `new RealtimeClient(realtimeUrl, ...)`: ws://127.0.0.1:PORT/realtime/v1 */
  realtimeUrl: string
  port: number
  faults: RealtimeServerFaults
  stats: RealtimeServerStats
  /** Number of joined channels, optionally only those for `topic` (without the "realtime:" prefix). */
  subscriberCount(topic?: string, isPrivate?: boolean): number
  /** The quota counter as the server sees it (avg events/s over the window, triggered). */
  quotaState(): { avg: number; triggered: boolean; limit: number | null }
  /** Whether the replication stream is live now. */
  replicationLive(): boolean
  close(): Promise<void>
}

export const SHIM_SQL_PATH = fileURLToPath(new URL('./realtime-shim.sql', import.meta.url))

/** Apply test/support/realtime-shim.sql to a database (idempotent). */
export async function applyRealtimeShim(databaseUrl: string): Promise<void> {
  const text = await readFile(SHIM_SQL_PATH, 'utf8')
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} })
  try {
    await sql.unsafe(text) // simple query protocol: multi-statement script is fine
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/** Mint a Supabase-style HS256 JWT (role + exp are what Realtime requires). */
export async function signTestJwt(
  jwtSecret: string,
  claims: { role: string; [claim: string]: unknown },
  expiresInSeconds = 3600,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT({ iss: 'supabase', ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(now)
    .setExpirationTime(now + expiresInSeconds)
    .sign(new TextEncoder().encode(jwtSecret))
}

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

type Vsn = '1.0.0' | '2.0.0'
type Json = Record<string, unknown>
type Sql = postgres.Sql

/** Decoded V2 binary "user broadcast push" (kind 3) sent by realtime-js for channel.send(). */
interface UserBroadcastPush {
  kind: 'user_broadcast_push'
  event: string
  encoding: 'json' | 'binary'
  body: Buffer
}

interface Inbound {
  joinRef: string | null
  ref: string | null
  topic: string
  event: string
  payload: Json | UserBroadcastPush
}

/** What gets fanned out: either a UserBroadcast (DB rows, binary pushes) or a plain map payload. */
type OutBroadcast =
  | { kind: 'user'; event: string; encoding: 'json' | 'binary'; body: Buffer; meta: Json | null }
  | { kind: 'map'; payload: Json }

interface Policies {
  broadcastRead: boolean | null
  presenceRead: boolean | null
  broadcastWrite: boolean | null
}

interface Conn {
  id: number
  ws: WebSocket
  vsn: Vsn
  apikey: string
  channels: Map<string, Sub>
  queue: Promise<void>
  held: Array<string | Buffer>
  heldTimer: NodeJS.Timeout | null
  closed: boolean
}

interface Sub {
  conn: Conn
  topic: string
  subTopic: string
  joinRef: string | null
  isPrivate: boolean
  presenceEnabled: boolean
  selfBroadcast: boolean
  ackBroadcast: boolean
  accessToken: string
  claims: Claims
  policies: Policies | null
  tokenTimer: NodeJS.Timeout | null
  /** replication_ready opt-in: deadline (ms epoch) until the system message is sent, null once sent or not asked. */
  readyDeadline: number | null
}

interface Claims {
  role: string
  exp: number
  sub?: string
  [claim: string]: unknown
}

type TokenResult =
  | { ok: true; claims: Claims }
  | { ok: false; reason: TokenFailure; code: string; message: string }

type TokenFailure = 'malformed' | 'signer' | 'expired' | 'signature' | 'missing_claims' | 'invalid'

class JoinRefused extends Error {}

/** Thrown inside sql.begin() to force a ROLLBACK while carrying a result out. */
class Rollback<T> extends Error {
  constructor(readonly value: T) {
    super('rollback')
  }
}

const HS_ALGS = ['HS256', 'HS384', 'HS512']
const NOTIFY_CHANNEL = 'realtime_shim_messages'
const WS_PATHS = [/\/realtime\/v1\/websocket$/, /^\/socket\/websocket$/]
const KIND_PUSH = 0
const KIND_USER_BROADCAST_PUSH = 3
const KIND_USER_BROADCAST = 4

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v)
}

function isUserPush(p: Inbound['payload']): p is UserBroadcastPush {
  return p.kind === 'user_broadcast_push' && Buffer.isBuffer(p.body)
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null
}

function pgCode(err: unknown): string | undefined {
  return err instanceof postgres.PostgresError ? err.code : undefined
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

// --- wire format ------------------------------------------------------------

/** V2 binary frames: kind 0 (push) and kind 3 (user broadcast push), per RealtimeWeb.Socket.V2Serializer. */
function decodeBinary(buf: Buffer): Inbound {
  const kind = buf.readUInt8(0)
  let off = 0
  const take = (n: number): string => {
    const s = buf.toString('utf8', off, off + n)
    off += n
    return s
  }
  if (kind === KIND_USER_BROADCAST_PUSH) {
    const [joinRefLen, refLen, topicLen, eventLen, metaLen, enc] = [1, 2, 3, 4, 5, 6].map((i) => buf.readUInt8(i))
    off = 7
    const joinRef = take(joinRefLen ?? 0)
    const ref = take(refLen ?? 0)
    const topic = take(topicLen ?? 0)
    const event = take(eventLen ?? 0)
    take(metaLen ?? 0) // client metadata: the real server ignores it too
    return {
      joinRef: joinRef || null,
      ref: ref || null,
      topic,
      event: 'broadcast',
      payload: { kind: 'user_broadcast_push', event, encoding: enc === 0 ? 'binary' : 'json', body: buf.subarray(off) },
    }
  }
  if (kind === KIND_PUSH) {
    const [joinRefLen, refLen, topicLen, eventLen] = [1, 2, 3, 4].map((i) => buf.readUInt8(i))
    off = 5
    const joinRef = take(joinRefLen ?? 0)
    const ref = take(refLen ?? 0)
    const topic = take(topicLen ?? 0)
    const event = take(eventLen ?? 0)
    return { joinRef: joinRef || null, ref: ref || null, topic, event, payload: { binary: buf.subarray(off) } }
  }
  throw new Error(`unknown binary frame kind ${kind}`)
}

function decodeText(vsn: Vsn, text: string): Inbound {
  const parsed: unknown = JSON.parse(text)
  if (vsn === '2.0.0') {
    if (!Array.isArray(parsed) || parsed.length < 5) throw new Error('expected V2 array')
    const [joinRef, ref, topic, event, payload] = parsed as unknown[]
    return { joinRef: str(joinRef), ref: str(ref), topic: str(topic) ?? '', event: str(event) ?? '', payload: isRecord(payload) ? payload : {} }
  }
  if (!isRecord(parsed)) throw new Error('expected V1 object')
  return {
    joinRef: str(parsed.join_ref),
    ref: str(parsed.ref),
    topic: str(parsed.topic) ?? '',
    event: str(parsed.event) ?? '',
    payload: isRecord(parsed.payload) ? parsed.payload : {},
  }
}

/** Phoenix messages/replies. V1 serializes only topic/event/payload/ref (no join_ref). */
function encodeText(vsn: Vsn, joinRef: string | null, ref: string | null, topic: string, event: string, payload: unknown): string {
  if (vsn === '1.0.0') return JSON.stringify({ topic, event, payload, ref })
  return JSON.stringify([joinRef, ref, topic, event, payload])
}

/** Encode a broadcast the way MessageDispatcher/V2Serializer do; null = not representable for this client. */
function encodeBroadcast(vsn: Vsn, topic: string, msg: OutBroadcast): string | Buffer | null {
  if (msg.kind === 'map') return encodeText(vsn, null, null, topic, 'broadcast', msg.payload)
  if (vsn === '1.0.0') {
    // UserBroadcast.convert_to_json_broadcast: only JSON payloads survive for V1 clients
    if (msg.encoding !== 'json') return null
    const payload: Json = { event: msg.event, payload: JSON.parse(msg.body.toString('utf8')) as unknown, type: 'broadcast' }
    if (msg.meta) payload.meta = msg.meta
    return encodeText(vsn, null, null, topic, 'broadcast', payload)
  }
  const topicB = Buffer.from(topic, 'utf8')
  const eventB = Buffer.from(msg.event, 'utf8')
  const metaB = msg.meta ? Buffer.from(JSON.stringify(msg.meta), 'utf8') : Buffer.alloc(0)
  if (topicB.length > 255 || eventB.length > 255 || metaB.length > 255) return null
  const header = Buffer.from([KIND_USER_BROADCAST, topicB.length, eventB.length, metaB.length, msg.encoding === 'json' ? 1 : 0])
  return Buffer.concat([header, topicB, eventB, metaB, msg.body])
}

// --- server -------------------------------------------------------------------

export async function startRealtimeServer(opts: StartRealtimeServerOptions): Promise<RealtimeServer> {
  const log = opts.logger ?? (() => {})
  const random = opts.random ?? Math.random
  const tokenRecheckMs = opts.tokenRecheckMs ?? 5 * 60_000
  const joinErrorDelayMs = opts.joinErrorDelayMs ?? 0
  const secretKey = new TextEncoder().encode(opts.jwtSecret)

  const sql: Sql = postgres(opts.databaseUrl, {
    max: 5,
    onnotice: () => {},
    connection: { application_name: 'realtime-stand-in' },
  })

  try {
    await sql`select 1 from realtime.messages limit 0`
  } catch (err) {
    await sql.end({ timeout: 1 })
    throw new Error(
      `realtime stand-in: cannot use realtime.messages at ${opts.databaseUrl} (${(err as Error).message}). ` +
        `Apply test/support/realtime-shim.sql first (applyRealtimeShim()).`,
    )
  }
  if (opts.createPartitions !== false) {
    await sql`select realtime_shim.create_messages_partitions()`
  }

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
  }

  // --- quota (Tenants.events_per_second_rate + RateCounter) -----------------------
  const quota = opts.quota
    ? { limit: opts.quota.eventsPerSecond, tickMs: opts.quota.tickMs ?? 5_000, buckets: opts.quota.buckets ?? 12, lagMs: opts.quota.channelLagMs ?? 1 }
    : null
  let quotaCount = 0
  let quotaBucket: number[] = []
  let quotaAvg = 0
  let quotaTriggered = false
  const quotaTimer = quota
    ? setInterval(() => {
        // RateCounter.handle_info(:tick): newest count first, at most max_bucket_len, avg per second.
        quotaBucket = [quotaCount, ...quotaBucket].slice(0, quota.buckets)
        quotaCount = 0
        quotaAvg = quotaBucket.reduce((a, b) => a + b, 0) / quotaBucket.length / (quota.tickMs / 1000)
        if (quotaTriggered) {
          if (quotaAvg < quota.limit) quotaTriggered = false
        } else if (quotaAvg >= quota.limit) {
          quotaTriggered = true
          stats.rateLimitEpisodes++
          log('MessagePerSecondRateLimitReached: Too many messages per second', { avg: quotaAvg })
        }
      }, quota.tickMs)
    : null
  quotaTimer?.unref()
  function countEvent(): void {
    if (!quota) return
    quotaCount++
    stats.quotaCounted++
  }

  // --- replication start (Connect -> async ReplicationConnection; RealtimeChannel replication_ready)
  const replicationReadyTimeoutMs = opts.replication?.readyTimeoutMs ?? 60_000
  /** ms epoch from which the stream is live; null = tenant connection not started yet. */
  let replicationLiveAt: number | null = opts.replication ? null : 0
  const replicationLive = (): boolean => replicationLiveAt !== null && Date.now() >= replicationLiveAt
  function startTenant(): void {
    if (replicationLiveAt === null) replicationLiveAt = Date.now() + (opts.replication?.startDelayMs ?? 0)
  }
  // Channels that asked for replication_ready are checked like notify_replication_ready (every 500 ms there).
  const readyTimer = setInterval(() => {
    const now = Date.now()
    for (const conn of conns) {
      for (const sub of [...conn.channels.values()]) {
        if (sub.readyDeadline === null) continue
        if (replicationLive()) {
          sub.readyDeadline = null
          stats.replicationReadySent++
          push(sub, 'system', { extension: 'system', status: 'ok', message: 'Replication connection established', channel: sub.subTopic })
        } else if (now >= sub.readyDeadline) {
          stats.replicationTimeouts++
          shutdown(sub, 'Replication connection was not established in time')
        }
      }
    }
  }, 50)
  readyTimer.unref()

  const conns = new Set<Conn>()
  /** `${private|public}:${subTopic}` -> joined channels; private and public topics never mix (Tenants.tenant_topic). */
  const index = new Map<string, Set<Sub>>()
  const keyOf = (isPrivate: boolean, subTopic: string): string => `${isPrivate ? 'private' : 'public'}:${subTopic}`
  let refuseUntil = 0
  let nextConnId = 1
  let closing = false

  // --- tokens (ChannelsAuthorization.authorize_conn + JwtVerification) ---------

  async function verifyToken(raw: string): Promise<TokenResult> {
    let token = raw
    try {
      token = decodeURIComponent(raw)
    } catch {
      /* keep as-is */
    }
    token = token.replace(/\s/g, '')
    let alg: string | undefined
    try {
      alg = decodeProtectedHeader(token).alg
      decodeJwt(token)
    } catch {
      return { ok: false, reason: 'malformed', code: 'MalformedJWT', message: 'The token provided is not a valid JWT' }
    }
    if (!alg || !HS_ALGS.includes(alg)) {
      return {
        ok: false,
        reason: 'signer',
        code: 'JwtSignerError',
        message: 'Failed to generate JWT signer, check your JWT secret or JWKS configuration',
      }
    }
    let payload: Json
    try {
      payload = (await jwtVerify(token, secretKey, { algorithms: HS_ALGS })).payload as Json
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        const exp = typeof err.payload.exp === 'number' ? err.payload.exp : 0
        const ago = Math.floor(Date.now() / 1000) - exp
        return { ok: false, reason: 'expired', code: 'InvalidJWTToken', message: `Token has expired ${ago} seconds ago` }
      }
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
        return { ok: false, reason: 'signature', code: 'JwtSignatureError', message: 'Failed to validate JWT signature' }
      }
      return { ok: false, reason: 'invalid', code: 'InvalidJWTToken', message: (err as Error).message }
    }
    if (typeof payload.role !== 'string' || typeof payload.exp !== 'number') {
      return { ok: false, reason: 'missing_claims', code: 'InvalidJWTToken', message: 'Fields `role` and `exp` are required in JWT' }
    }
    return { ok: true, claims: payload as Claims }
  }

  // --- RLS authorization (Tenants.Authorization) --------------------------------

  /** set_conn_config: what RLS policies on realtime.messages can read. */
  async function setConnConfig(tx: postgres.TransactionSql, subTopic: string, claims: Claims): Promise<void> {
    const sub = typeof claims.sub === 'string' ? claims.sub : ''
    await tx`
      select
        set_config('role', ${claims.role}, true),
        set_config('realtime.topic', ${subTopic}, true),
        set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
        set_config('request.jwt.claim.sub', ${sub}, true),
        set_config('request.jwt.claim.role', ${claims.role}, true),
        set_config('request.headers', '{}', true)`
  }

  /** Maps authorization DB errors to the join error reasons the real channel returns. */
  function authorizationError(err: unknown, subTopic: string): JoinRefused {
    const code = pgCode(err)
    if (code === '23514') {
      return new JoinRefused('MissingPartition: Realtime was unable to find the expected messages partition')
    }
    if (code === '57014') return new JoinRefused(`QueryCanceled: ${(err as Error).message}`)
    if (code !== undefined) {
      log('RlsPolicyError', err)
      return new JoinRefused(`Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}`)
    }
    log('UnableToConnectToProject', err)
    return new JoinRefused('UnableToConnectToProject: Realtime was unable to connect to the project database')
  }

  /**
   * Read check exactly like get_read_policies_for_connection: in one transaction,
   * insert probe rows (as the server's own user) for topic+extension, switch to
   * the JWT role with its claims and realtime.topic, SELECT the probes back
   * through RLS, then ROLLBACK. A probe you can see = read permission.
   */
  async function readPolicies(subTopic: string, claims: Claims, presenceEnabled: boolean, prev: Policies | null): Promise<Policies> {
    const probes = new Map<string, string>([['broadcast', randomUUID()]])
    if (presenceEnabled) probes.set('presence', randomUUID())
    try {
      await sql.begin(async (tx) => {
        for (const [extension, id] of probes) {
          await tx`
            insert into realtime.messages (id, topic, extension, inserted_at, updated_at)
            values (${id}::uuid, ${subTopic}, ${extension}, now() at time zone 'utc', now() at time zone 'utc')`
        }
        await setConnConfig(tx, subTopic, claims)
        const rows = await tx`select id::text as id from realtime.messages where id::text in ${tx([...probes.values()])}`
        throw new Rollback(new Set(rows.map((r) => String(r.id))))
      })
      throw new Error('unreachable')
    } catch (err) {
      if (!(err instanceof Rollback)) throw authorizationError(err, subTopic)
      const seen = err.value as Set<string>
      const presenceId = probes.get('presence')
      return {
        broadcastRead: seen.has(probes.get('broadcast') ?? ''),
        presenceRead: presenceId ? seen.has(presenceId) : (prev?.presenceRead ?? null),
        broadcastWrite: null, // re-evaluated lazily with the new claims
      }
    }
  }

  /** Write check like check_write_policies: INSERT as the JWT role in a savepoint; 42501 = denied. Rolled back. */
  async function broadcastWritePolicy(sub: Sub): Promise<boolean> {
    try {
      await sql.begin(async (tx) => {
        await setConnConfig(tx, sub.subTopic, sub.claims)
        let allowed = true
        try {
          await tx.savepoint(async (sp) => {
            await sp`
              insert into realtime.messages (topic, extension, inserted_at, updated_at)
              values (${sub.subTopic}, 'broadcast', now() at time zone 'utc', now() at time zone 'utc')`
          })
        } catch (err) {
          if (pgCode(err) !== '42501') throw err
          allowed = false
        }
        throw new Rollback(allowed)
      })
      throw new Error('unreachable')
    } catch (err) {
      if (err instanceof Rollback) return err.value === true
      log('broadcast write authorization failed', err)
      return false
    }
  }

  // --- output + fault injection -------------------------------------------------

  function sendRaw(conn: Conn, frame: string | Buffer): void {
    if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(frame, { binary: typeof frame !== 'string' })
  }

  function reply(conn: Conn, msg: Inbound, status: 'ok' | 'error', response: Json): void {
    sendRaw(conn, encodeText(conn.vsn, msg.joinRef, msg.ref, msg.topic, 'phx_reply', { status, response }))
  }

  function push(sub: Sub, event: string, payload: Json, ref: string | null = null): void {
    sendRaw(sub.conn, encodeText(sub.conn.vsn, sub.joinRef, ref, sub.topic, event, payload))
  }

  function writeBroadcast(conn: Conn, frame: string | Buffer): void {
    if (conn.ws.readyState !== WebSocket.OPEN) {
      stats.undeliverable++
      return
    }
    conn.ws.send(frame, { binary: typeof frame !== 'string' })
    stats.delivered++
  }

  function transmit(conn: Conn, frame: string | Buffer): void {
    if (faults.latencyMs > 0) setTimeout(() => writeBroadcast(conn, frame), faults.latencyMs)
    else writeBroadcast(conn, frame)
  }

  function flushHeld(conn: Conn): void {
    if (conn.heldTimer) clearTimeout(conn.heldTimer)
    conn.heldTimer = null
    const frames = conn.held
    conn.held = []
    for (let i = frames.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1))
      const a = frames[i]
      const b = frames[j]
      if (a !== undefined && b !== undefined) {
        frames[i] = b
        frames[j] = a
      }
    }
    for (const f of frames) transmit(conn, f)
  }

  /** Every broadcast to a subscriber goes through here so faults apply uniformly. */
  function deliver(sub: Sub, msg: OutBroadcast): void {
    if (quota) {
      // MessageDispatcher sends :update_rate_counter; the channel counts it and, if the counter is
      // triggered by the time it handles it, shuts down (RealtimeChannel.handle_info(:update_rate_counter)).
      countEvent()
      setTimeout(() => {
        if (quotaTriggered && sub.conn.channels.get(sub.topic) === sub) {
          stats.rateLimitShutdowns++
          shutdown(sub, 'Too many messages per second')
        }
      }, quota.lagMs).unref()
    }
    const frame = encodeBroadcast(sub.conn.vsn, sub.topic, msg)
    if (frame === null) {
      stats.undeliverable++
      return
    }
    if (faults.dropRate > 0 && random() < faults.dropRate) {
      stats.dropped++
      return
    }
    let copies = 1
    if (faults.duplicateRate > 0 && random() < faults.duplicateRate) {
      copies = 2
      stats.duplicated++
    }
    const conn = sub.conn
    for (let i = 0; i < copies; i++) {
      if (faults.reorderWindow > 1) {
        conn.held.push(frame)
        if (conn.held.length >= faults.reorderWindow) flushHeld(conn)
        else if (!conn.heldTimer) conn.heldTimer = setTimeout(() => flushHeld(conn), faults.reorderFlushMs)
      } else {
        transmit(conn, frame)
      }
    }
  }

  // --- channel lifecycle -----------------------------------------------------------

  function removeSub(sub: Sub): void {
    if (sub.tokenTimer) clearTimeout(sub.tokenTimer)
    sub.tokenTimer = null
    if (sub.conn.channels.get(sub.topic) === sub) sub.conn.channels.delete(sub.topic)
    const key = keyOf(sub.isPrivate, sub.subTopic)
    const set = index.get(key)
    set?.delete(sub)
    if (set && set.size === 0) index.delete(key)
  }

  /** shutdown_response: system error message, then the channel process stops (phx_close). */
  function shutdown(sub: Sub, message: string): void {
    push(sub, 'system', { extension: 'system', status: 'error', message, channel: sub.subTopic })
    push(sub, 'phx_close', {}, sub.joinRef)
    removeSub(sub)
  }

  /** confirm_token timer: re-verify every tokenRecheckMs or exactly at exp, whichever is first. */
  function armTokenTimer(sub: Sub): void {
    if (sub.tokenTimer) clearTimeout(sub.tokenTimer)
    const untilExp = sub.claims.exp * 1000 - Date.now()
    sub.tokenTimer = setTimeout(() => {
      sub.tokenTimer = null
      void verifyToken(sub.accessToken).then((res) => {
        if (sub.conn.channels.get(sub.topic) !== sub) return
        if (res.ok) {
          sub.claims = res.claims
          armTokenTimer(sub)
        } else {
          shutdown(sub, res.reason === 'signature' ? ':signature_error' : res.message)
        }
      })
    }, Math.max(0, Math.min(tokenRecheckMs, untilExp)))
    sub.tokenTimer.unref()
  }

  async function handleJoin(conn: Conn, msg: Inbound): Promise<void> {
    const refuse = async (reason: string): Promise<void> => {
      stats.refusedJoins++
      log('join refused', { topic: msg.topic, reason })
      // join_error: the channel process sleeps before answering; the socket waits for it.
      if (joinErrorDelayMs > 0) await new Promise((r) => setTimeout(r, joinErrorDelayMs))
      reply(conn, msg, 'error', { reason })
    }
    if (!msg.topic.startsWith('realtime:')) return refuse('unmatched topic')
    const subTopic = msg.topic.slice('realtime:'.length)
    if (subTopic === '') return refuse('TopicNameRequired: You must provide a topic name')

    const payload: Json = isUserPush(msg.payload) ? {} : msg.payload
    const config = isRecord(payload.config) ? payload.config : {}
    const broadcast = isRecord(config.broadcast) ? config.broadcast : {}
    const presence = isRecord(config.presence) ? config.presence : {}
    const isPrivate = config.private === true
    const presenceEnabled = presence.enabled === true

    if (Array.isArray(config.postgres_changes) && config.postgres_changes.length > 0) {
      return refuse('NotEmulated: postgres_changes is not supported by the test stand-in server')
    }
    if (broadcast.replay !== undefined) {
      return refuse(
        isPrivate
          ? 'NotEmulated: broadcast replay is not supported by the test stand-in server'
          : 'UnableToReplayMessages: Replay is not allowed for public channels',
      )
    }

    // assign_access_token: sb_* publishable keys and a missing token fall back to the socket's apikey
    const rawToken = str(payload.access_token) ?? str(payload.user_token)
    const accessToken = rawToken && !rawToken.startsWith('sb_') ? rawToken : conn.apikey
    const token = await verifyToken(accessToken)
    if (!token.ok) return refuse(`${token.code}: ${token.message}`)

    let policies: Policies | null = null
    if (isPrivate) {
      try {
        policies = await readPolicies(subTopic, token.claims, presenceEnabled, null)
      } catch (err) {
        if (err instanceof JoinRefused) return refuse(err.message)
        throw err
      }
      if (!policies.broadcastRead && !policies.presenceRead) {
        return refuse(`Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}`)
      }
    }
    if (conn.closed) return

    // Duplicate join on the same socket replaces the old channel (Phoenix does the same).
    const existing = conn.channels.get(msg.topic)
    if (existing) removeSub(existing)

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
    }
    startTenant() // Connect.lookup_or_start_connection: the first join starts replication (asynchronously)
    conn.channels.set(msg.topic, sub)
    const key = keyOf(isPrivate, subTopic)
    let set = index.get(key)
    if (!set) index.set(key, (set = new Set()))
    set.add(sub) // subscribed before the ok reply, like the real channel
    armTokenTimer(sub)
    stats.joins++
    reply(conn, msg, 'ok', { postgres_changes: [] })
    if (presenceEnabled) push(sub, 'presence_state', {})
  }

  async function handleAccessToken(sub: Sub, msg: Inbound): Promise<void> {
    const token = isUserPush(msg.payload) ? null : str(msg.payload.access_token)
    if (token === null || token.startsWith('sb_') || token === sub.accessToken) return
    const res = await verifyToken(token)
    if (sub.conn.channels.get(sub.topic) !== sub) return
    if (!res.ok) return shutdown(sub, res.reason === 'signature' ? ':signature_error' : res.message)
    sub.accessToken = token
    sub.claims = res.claims
    if (sub.isPrivate) {
      const previous = sub.policies
      let next: Policies
      try {
        next = await readPolicies(sub.subTopic, res.claims, sub.presenceEnabled, previous)
      } catch (err) {
        return shutdown(sub, err instanceof JoinRefused ? err.message.replace(/^\w+: /, '') : String(err))
      }
      if (sub.conn.channels.get(sub.topic) !== sub) return
      const revoked =
        (previous?.broadcastRead === true && next.broadcastRead === false) ||
        (previous?.presenceRead === true && next.presenceRead === false)
      if (revoked) return shutdown(sub, `You no longer have permission to read from this Channel topic: ${sub.subTopic}`)
      if (!next.broadcastRead && !next.presenceRead) {
        return shutdown(sub, `You do not have permissions to read from this Channel topic: ${sub.subTopic}`)
      }
      sub.policies = next
    }
    armTokenTimer(sub)
  }

  async function handleClientBroadcast(sub: Sub, msg: Inbound): Promise<void> {
    if (sub.isPrivate && sub.policies) {
      if (sub.policies.broadcastWrite === null) sub.policies.broadcastWrite = await broadcastWritePolicy(sub)
      if (!sub.policies.broadcastWrite) return // real server: silently not sent, no ack
    }
    stats.clientBroadcasts++
    const p = msg.payload
    const out: OutBroadcast = isUserPush(p)
      ? { kind: 'user', event: p.event, encoding: p.encoding, body: p.body, meta: null }
      : { kind: 'map', payload: p }
    for (const target of index.get(keyOf(sub.isPrivate, sub.subTopic)) ?? []) {
      if (target === sub && !sub.selfBroadcast) continue
      if (target.isPrivate && target.policies?.broadcastRead !== true) continue
      deliver(target, out)
    }
    if (sub.ackBroadcast) reply(sub.conn, msg, 'ok', {})
  }

  async function handleMessage(conn: Conn, msg: Inbound): Promise<void> {
    if (msg.topic === 'phoenix' && msg.event === 'heartbeat') {
      stats.heartbeats++
      return reply(conn, msg, 'ok', {})
    }
    if (msg.event === 'phx_join') return handleJoin(conn, msg)
    const sub = conn.channels.get(msg.topic)
    if (!sub) return reply(conn, msg, 'error', { reason: 'unmatched topic' })
    switch (msg.event) {
      case 'phx_leave':
        stats.leaves++
        reply(conn, msg, 'ok', {})
        push(sub, 'phx_close', {}, sub.joinRef)
        return removeSub(sub)
      case 'access_token':
        return handleAccessToken(sub, msg)
      case 'broadcast':
        return handleClientBroadcast(sub, msg)
      case 'presence':
        return reply(conn, msg, 'ok', {}) // acknowledged, not tracked
      default:
        log('unexpected client message', { topic: msg.topic, event: msg.event })
    }
  }

  // --- database stream -------------------------------------------------------------

  interface RowNote {
    id: string
    inserted_at: string
    fetch?: boolean
    topic?: unknown
    extension?: unknown
    event?: unknown
    private?: unknown
    payload?: unknown
    binary_payload?: unknown
  }

  /** ReplicationConnection's Insert handler: one row -> UserBroadcast to `topic` on the matching private/public side. */
  function dispatchRow(row: RowNote): void {
    if (!replicationLive()) {
      // Committed while no replication slot streamed: the slot starts after it, never sees it.
      stats.notStreamed++
      return
    }
    stats.dbMessages++
    if (row.extension !== 'broadcast') return
    if (quotaTriggered) {
      // ReplicationConnection.check_rate_limit: dropped, logged as UnableToBroadcastChanges.
      stats.rateLimitedRows++
      return
    }
    countEvent() // GenCounter.add(events_per_second_rate.id) for the row read
    const topic = str(row.topic)
    const event = str(row.event)
    if (topic === null || event === null || typeof row.private !== 'boolean') {
      log('UnableToBroadcastChanges: missing topic/event/private', row)
      return
    }
    let out: OutBroadcast
    const meta = { id: row.id }
    if (typeof row.binary_payload === 'string') {
      out = { kind: 'user', event, encoding: 'binary', body: Buffer.from(row.binary_payload, 'base64'), meta }
    } else if (row.payload !== null && row.payload !== undefined) {
      out = { kind: 'user', event, encoding: 'json', body: Buffer.from(JSON.stringify(row.payload), 'utf8'), meta }
    } else {
      log('UnableToBroadcastChanges: payload_missing', row)
      return
    }
    for (const sub of index.get(keyOf(row.private, topic)) ?? []) {
      // MessageDispatcher: private subscribers need broadcast read permission
      if (sub.isPrivate && sub.policies?.broadcastRead !== true) continue
      deliver(sub, out)
    }
  }

  // Sequential so rows are fanned out in commit (NOTIFY) order even when one must be fetched.
  let rowQueue: Promise<void> = Promise.resolve()
  function onNotify(raw: string): void {
    let note: RowNote
    try {
      note = JSON.parse(raw) as RowNote
    } catch (err) {
      log('bad notification', err)
      return
    }
    rowQueue = rowQueue
      .then(async () => {
        let row = note
        if (note.fetch) {
          const rows = await sql`
            select id::text as id, inserted_at::text as inserted_at, topic, extension, event, private, payload,
                   encode(binary_payload, 'base64') as binary_payload
            from realtime.messages where id = ${note.id}::uuid and inserted_at = ${note.inserted_at}::text::timestamp`
          // (::text first: bound straight to a timestamp, postgres.js would cut the microseconds.)
          const first = rows[0]
          if (!first) return
          row = first as unknown as RowNote
        }
        if (!closing) dispatchRow(row)
      })
      .catch((err: unknown) => log('failed to dispatch row', err))
  }

  const listener = await sql.listen(NOTIFY_CHANNEL, onNotify)

  // --- websocket transport --------------------------------------------------------

  const wss = new WebSocketServer({ noServer: true })
  const http = createServer(async (req, res) => {
    if (opts.httpHandler && (await opts.httpHandler(req, res).catch(() => false))) return
    res.writeHead(404, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'Not found (test stand-in only serves the websocket endpoint)' }))
  })

  function rejectUpgrade(socket: Duplex, status: number, error: string): void {
    stats.rejectedConnections++
    const body = JSON.stringify({ error })
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    )
  }

  /** UserSocket.connect: apikey must be a valid JWT or the upgrade is refused with 401. */
  const upgradeErrors: Record<TokenFailure, string> = {
    malformed: 'The token provided is not a valid JWT',
    signer: 'Failed to generate JWT signer, check your JWT secret or JWKS configuration',
    expired: 'Token has expired',
    signature: 'Failed to validate JWT signature',
    missing_claims: 'Fields `role` and `exp` are required in JWT',
    invalid: 'The token provided is not a valid JWT',
  }

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', (err) => log('upgrade socket error', err))
    const url = new URL(req.url ?? '/', 'http://localhost')
    const path = url.pathname.replace(/\/+$/, '')
    if (closing || !WS_PATHS.some((re) => re.test(path))) return rejectUpgrade(socket, 404, 'Not found')
    if (Date.now() < refuseUntil) return rejectUpgrade(socket, 503, 'Service unavailable (faults.dropConnections)')
    const vsnParam = url.searchParams.get('vsn') ?? '1.0.0' // Phoenix default when absent
    if (vsnParam !== '1.0.0' && vsnParam !== '2.0.0') {
      return rejectUpgrade(socket, 403, `The client's requested transport version "${vsnParam}" does not match server's version requirements`)
    }
    const headerKey = req.headers['x-api-key']
    const apikey = (typeof headerKey === 'string' ? headerKey : null) ?? url.searchParams.get('apikey')
    if (!apikey) return rejectUpgrade(socket, 401, 'API key is missing')
    const check = await verifyToken(apikey)
    if (!check.ok) return rejectUpgrade(socket, 401, upgradeErrors[check.reason])
    if (closing || Date.now() < refuseUntil) return rejectUpgrade(socket, 503, 'Service unavailable')
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, vsnParam, apikey))
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
    }
    conns.add(conn)
    stats.connections++
    ws.on('error', (err) => log('websocket error', err))
    ws.on('message', (data: RawData, isBinary: boolean) => {
      let msg: Inbound
      try {
        const buf = rawToBuffer(data)
        msg = isBinary ? decodeBinary(buf) : decodeText(vsn, buf.toString('utf8'))
      } catch (err) {
        log('undecodable frame, closing socket', err)
        ws.close(1003, 'invalid frame')
        return
      }
      // Handle in arrival order per socket (joins await the database).
      conn.queue = conn.queue
        .then(() => (conn.closed ? undefined : handleMessage(conn, msg)))
        .catch((err: unknown) => log('error handling message', err))
    })
    ws.on('close', () => {
      conn.closed = true
      conns.delete(conn)
      if (conn.heldTimer) clearTimeout(conn.heldTimer)
      stats.undeliverable += conn.held.length
      conn.held = []
      for (const sub of [...conn.channels.values()]) removeSub(sub)
    })
  }

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    onUpgrade(req, socket, head).catch((err: unknown) => {
      log('upgrade failed', err)
      socket.destroy()
    })
  })

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject)
    http.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      http.off('error', reject)
      resolve()
    })
  })
  const { port } = http.address() as AddressInfo
  const host = opts.host ?? '127.0.0.1'

  const defaults = { dropRate: 0, duplicateRate: 0, reorderWindow: 0, reorderFlushMs: 50, latencyMs: 0 }
  const faults: RealtimeServerFaults = {
    ...defaults,
    dropConnections(ms: number): Promise<void> {
      refuseUntil = Date.now() + ms
      for (const conn of [...conns]) {
        stats.droppedConnections++
        conn.ws.terminate() // abrupt: no close frame, like a network cut
      }
      return new Promise((resolve) => setTimeout(resolve, ms))
    },
    crashChannels(topic?: string): number {
      let n = 0
      for (const conn of conns) {
        for (const sub of [...conn.channels.values()]) {
          if (topic !== undefined && sub.subTopic !== topic) continue
          push(sub, 'phx_error', {}, sub.joinRef)
          removeSub(sub)
          n++
        }
      }
      return n
    },
    restartReplication(ms: number): void {
      replicationLiveAt = Date.now() + ms
    },
    reset(): void {
      Object.assign(faults, defaults)
      refuseUntil = 0
    },
  }

  return {
    url: `http://${host}:${port}`,
    realtimeUrl: `ws://${host}:${port}/realtime/v1`,
    port,
    faults,
    stats,
    subscriberCount(topic?: string, isPrivate?: boolean): number {
      let n = 0
      for (const [key, set] of index) {
        const [side, ...rest] = key.split(':')
        if (topic !== undefined && rest.join(':') !== topic) continue
        if (isPrivate !== undefined && (side === 'private') !== isPrivate) continue
        n += set.size
      }
      return n
    },
    quotaState() {
      return { avg: quotaAvg, triggered: quotaTriggered, limit: quota?.limit ?? null }
    },
    replicationLive,
    async close(): Promise<void> {
      if (closing) return
      closing = true
      if (quotaTimer) clearInterval(quotaTimer)
      clearInterval(readyTimer)
      for (const conn of [...conns]) {
        for (const sub of [...conn.channels.values()]) removeSub(sub)
        if (conn.heldTimer) clearTimeout(conn.heldTimer)
        conn.ws.terminate()
      }
      await new Promise<void>((resolve) => wss.close(() => resolve()))
      http.closeAllConnections()
      await new Promise<void>((resolve) => http.close(() => resolve()))
      await listener.unlisten().catch(() => {})
      await rowQueue
      await sql.end({ timeout: 2 })
    },
  }
}
