/**
 * Proves the real @supabase/realtime-js client works against the test stand-in
 * (test/support/realtime-server.ts) and the realtime shim schema. Needs the
 * local PostgreSQL; it fails (never skips) when Postgres is down.
 */
import { randomBytes } from 'node:crypto';
import { RealtimeClient, type RealtimeChannel, type WebSocketLikeConstructor } from '@supabase/realtime-js';
import { createClient } from '@supabase/supabase-js';
import postgres from 'postgres';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { applyRealtimeShim, signTestJwt, startRealtimeServer, type RealtimeServer } from './support/realtime-server.js';

// The project's globalSetup resolves TEST_DATABASE_URL / local default; fall back when run without it.
const ADMIN_URL =
  (inject('databaseUrl') as string | undefined) ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const JWT_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
const noop = (): void => {};

type Vsn = '1.0.0' | '2.0.0';

interface ReceivedBroadcast {
  type: string;
  event: string;
  payload: Record<string, unknown>;
  meta?: { id: string };
}

interface Harness {
  client: RealtimeClient;
  channel: RealtimeChannel;
  statuses: Array<{ status: string; message?: string }>;
  received: ReceivedBroadcast[];
  system: Array<Record<string, unknown>>;
  /** isBinary flag of every websocket frame the client received. */
  frames: boolean[];
}

let admin: postgres.Sql | undefined;
let db: postgres.Sql;
let dbName: string | undefined;
let server: RealtimeServer | undefined;
let anonKey: string;
let serviceKey: string;
const clients: RealtimeClient[] = [];

async function waitFor(cond: () => boolean, label: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for: ${label}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function srv(): RealtimeServer {
  if (!server) throw new Error('stand-in server not started');
  return server;
}

/** A real RealtimeClient + channel, recording statuses, broadcasts and raw frame types. */
interface OpenOptions {
  topic: string;
  token: string;
  isPrivate: boolean;
  vsn?: Vsn;
  apikey?: string;
  broadcast?: { self?: boolean; ack?: boolean; replication_ready?: boolean };
  /** Another stand-in than the suite's default one. */
  server?: RealtimeServer;
}

async function open(opts: OpenOptions): Promise<Harness> {
  const frames: boolean[] = [];
  // Node 20 has no global WebSocket: hand realtime-js the `ws` class (subclassed to observe frames).
  class RecordingWebSocket extends WebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols);
      this.on('message', (_data, isBinary) => frames.push(isBinary));
    }
  }
  const client = new RealtimeClient((opts.server ?? srv()).realtimeUrl, {
    params: { apikey: opts.apikey ?? anonKey },
    transport: RecordingWebSocket as unknown as WebSocketLikeConstructor,
    vsn: opts.vsn ?? '2.0.0',
    timeout: 5_000,
  });
  clients.push(client);
  await client.setAuth(opts.token);
  const channel = client.channel(opts.topic, { config: { private: opts.isPrivate, broadcast: opts.broadcast } });
  const h: Harness = { client, channel, statuses: [], received: [], system: [], frames };
  h.channel
    .on('broadcast', { event: '*' }, (msg) => h.received.push(msg as ReceivedBroadcast))
    .on('system', {}, (msg: Record<string, unknown>) => h.system.push(msg))
    .subscribe((status, err) => h.statuses.push({ status, message: err?.message }));
  return h;
}

const count = (h: Harness, status: string): number => h.statuses.filter((s) => s.status === status).length;

async function subscribed(opts: OpenOptions): Promise<Harness> {
  const h = await open(opts);
  await waitFor(() => count(h, 'SUBSCRIBED') > 0 || count(h, 'CHANNEL_ERROR') > 0, `join ${opts.topic}`);
  expect(h.statuses[0]).toEqual({ status: 'SUBSCRIBED', message: undefined });
  return h;
}

async function refusal(opts: OpenOptions): Promise<string> {
  const h = await open(opts);
  await waitFor(() => h.statuses.length > 0, `refusal of ${opts.topic}`);
  const first = h.statuses[0];
  expect(first?.status).toBe('CHANNEL_ERROR');
  return first?.message ?? '';
}

async function send(payload: Record<string, unknown>, event: string, topic: string, isPrivate = true): Promise<void> {
  // ::text first: a JS string bound straight to a jsonb parameter is JSON-encoded again by
  // postgres.js (a jsonb *string*), which realtime.send() turns into a swallowed WARNING.
  await db`select realtime.send(${JSON.stringify(payload)}::text::jsonb, ${event}, ${topic}, ${isPrivate})`;
}

const events = (h: Harness): string[] => h.received.map((m) => m.event);

// Checked at import time so an unreachable Postgres fails the file outright (no "skipped" tests).
{
  const probe = postgres(ADMIN_URL, { max: 1, connect_timeout: 5, onnotice: noop });
  try {
    await probe`select 1`;
  } catch (err) {
    throw new Error(
      `PostgreSQL is not reachable at ${ADMIN_URL.replace(/\/\/[^@]*@/, '//***@')} (${(err as Error).message}). ` +
        'Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start ' +
        '(or point TEST_DATABASE_URL at a superuser connection).',
    );
  } finally {
    await probe.end({ timeout: 1 });
  }
}

describe('realtime stand-in server with the real realtime-js client', () => {
  beforeAll(async () => {
    admin = postgres(ADMIN_URL, { max: 1, connect_timeout: 5, onnotice: noop });
    dbName = `rt_test_${randomBytes(6).toString('hex')}`;
    await admin.unsafe(`create database ${dbName}`);
    const dbUrl = new URL(ADMIN_URL);
    dbUrl.pathname = `/${dbName}`;
    await applyRealtimeShim(dbUrl.href);
    db = postgres(dbUrl.href, { max: 4, onnotice: noop });
    // Typical Supabase policy: signed-in users may read broadcasts on "allowed-*" topics.
    await db`
      create policy "authenticated can read allowed topics" on realtime.messages
      for select to authenticated
      using (realtime.topic() like 'allowed-%' and extension = 'broadcast')`;
    server = await startRealtimeServer({ databaseUrl: dbUrl.href, jwtSecret: JWT_SECRET });
    anonKey = await signTestJwt(JWT_SECRET, { role: 'anon' });
    serviceKey = await signTestJwt(JWT_SECRET, { role: 'service_role' });
  }, 30_000);

  afterEach(async () => {
    server?.faults.reset();
    await Promise.all(clients.splice(0).map((c) => c.removeAllChannels().catch(noop)));
  });

  const variants: RealtimeServer[] = [];
  afterAll(async () => {
    await Promise.all(variants.map((v) => v.close()));
    await server?.close();
    await db?.end({ timeout: 5 });
    if (admin && dbName) await admin.unsafe(`drop database if exists ${dbName} with (force)`);
    await admin?.end({ timeout: 5 });
  }, 30_000);

  it.each<Vsn>(['1.0.0', '2.0.0'])(
    'delivers realtime.send() to a private channel joined with a service_role JWT (vsn %s)',
    async (vsn) => {
      const topic = `room-${vsn}`;
      const h = await subscribed({ topic, token: serviceKey, isPrivate: true, vsn });
      await send({ text: 'hello', n: 1 }, 'new_message', topic);
      await waitFor(() => h.received.length === 1, 'broadcast');

      const [row] = await db`select id::text as id from realtime.messages where topic = ${topic}`;
      // realtime.send() injects the row id into the payload; the server adds it as meta.id.
      expect(h.received[0]).toEqual({
        type: 'broadcast',
        event: 'new_message',
        payload: { text: 'hello', n: 1, id: row?.id },
        meta: { id: row?.id },
      });
      // vsn 2.0.0 gets the V2Serializer binary user-broadcast frame; 1.0.0 only JSON text.
      expect(h.frames.includes(true)).toBe(vsn === '2.0.0');
    },
    20_000,
  );

  it('keeps private and public topics apart (row.private must match channel.private)', async () => {
    const priv = await subscribed({ topic: 'mixed', token: serviceKey, isPrivate: true });
    const pub = await subscribed({ topic: 'mixed', token: anonKey, isPrivate: false });
    await send({ v: 'p' }, 'private_event', 'mixed', true);
    await send({ v: 'q' }, 'public_event', 'mixed', false);
    await waitFor(() => priv.received.length > 0 && pub.received.length > 0, 'both broadcasts');
    await send({}, 'barrier', 'mixed', true);
    await send({}, 'barrier', 'mixed', false);
    await waitFor(() => events(priv).includes('barrier') && events(pub).includes('barrier'), 'barriers');
    expect(events(priv)).toEqual(['private_event', 'barrier']);
    expect(events(pub)).toEqual(['public_event', 'barrier']);
  }, 20_000);

  it('authorizes private joins through the RLS policies on realtime.messages', async () => {
    const user = await signTestJwt(JWT_SECRET, { role: 'authenticated', sub: '6f1f0a34-5c1e-4c55-9f53-3b0a4f6d1c11' });
    const allowed = await subscribed({ topic: 'allowed-1', token: user, isPrivate: true });
    await send({ ok: true }, 'ping', 'allowed-1');
    await waitFor(() => allowed.received.length === 1, 'broadcast on allowed topic');

    expect(await refusal({ topic: 'denied-1', token: user, isPrivate: true })).toBe(
      'Unauthorized: You do not have permissions to read from this Channel topic: denied-1',
    );
    // The policy is for `authenticated` only: anon has no read permission.
    expect(await refusal({ topic: 'allowed-1', token: anonKey, isPrivate: true })).toMatch(/^Unauthorized: /);
  }, 20_000);

  it('refuses joins with an expired or wrongly signed access token', async () => {
    const before = srv().stats.refusedJoins;
    const expired = await signTestJwt(JWT_SECRET, { role: 'service_role' }, -60);
    const forged = await signTestJwt('not-the-project-secret-not-the-project-secret', { role: 'service_role' });

    expect(await refusal({ topic: 'secure', token: expired, isPrivate: true })).toMatch(
      /^InvalidJWTToken: Token has expired \d+ seconds ago$/,
    );
    expect(await refusal({ topic: 'secure', token: forged, isPrivate: true })).toBe('JwtSignatureError: Failed to validate JWT signature');
    expect(srv().stats.refusedJoins).toBeGreaterThanOrEqual(before + 2);

    // An invalid apikey is refused at the websocket upgrade (HTTP 401), before any join.
    const rejected = srv().stats.rejectedConnections;
    const h = await open({ topic: 'secure', token: serviceKey, isPrivate: true, apikey: expired });
    await waitFor(() => srv().stats.rejectedConnections > rejected, 'upgrade rejected');
    expect(count(h, 'SUBSCRIBED')).toBe(0);
  }, 20_000);

  it('closes a joined channel when its access token expires (confirm_token)', async () => {
    const shortLived = await signTestJwt(JWT_SECRET, { role: 'service_role' }, 3);
    const h = await subscribed({ topic: 'expiring', token: shortLived, isPrivate: true });
    await waitFor(() => count(h, 'CLOSED') > 0, 'channel closed at exp', 5_000);
    expect(h.system[0]).toMatchObject({ extension: 'system', status: 'error', channel: 'expiring' });
    expect(String(h.system[0]?.message)).toMatch(/^Token has expired \d+ seconds ago$/);
  }, 20_000);

  it('relays client broadcasts (binary V2 push) to V1 and V2 subscribers, with ack and without self', async () => {
    const sender = await subscribed({ topic: 'chat', token: anonKey, isPrivate: false, broadcast: { ack: true } });
    const v1 = await subscribed({ topic: 'chat', token: anonKey, isPrivate: false, vsn: '1.0.0' });
    const v2 = await subscribed({ topic: 'chat', token: anonKey, isPrivate: false });
    const res = await sender.channel.send({ type: 'broadcast', event: 'typing', payload: { user: 'ana' } });
    expect(res).toBe('ok');
    await waitFor(() => v1.received.length > 0 && v2.received.length > 0, 'relayed broadcast');
    const expected = { type: 'broadcast', event: 'typing', payload: { user: 'ana' } };
    expect(v1.received).toEqual([expected]);
    expect(v2.received).toEqual([expected]);
    expect(sender.received).toEqual([]);
  }, 20_000);

  it('accepts the realtime URL supabase-js derives from SUPABASE_URL', async () => {
    const supabase = createClient(srv().url, anonKey, {
      realtime: { transport: WebSocket as unknown as WebSocketLikeConstructor },
      auth: { persistSession: false, autoRefreshToken: false },
    });
    clients.push(supabase.realtime);
    const received: string[] = [];
    const statuses: string[] = [];
    supabase
      .channel('sb-public')
      .on('broadcast', { event: '*' }, (m) => received.push(String(m.event)))
      .subscribe((status) => statuses.push(status));
    await waitFor(() => statuses.includes('SUBSCRIBED'), 'supabase-js subscribe');
    expect(supabase.realtime.endpointURL()).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/realtime\/v1\/websocket\?apikey=/);
    await send({}, 'from_db', 'sb-public', false);
    await waitFor(() => received.length > 0, 'broadcast via supabase-js');
    expect(received).toEqual(['from_db']);
  }, 20_000);

  it('re-authorizes on access_token updates and closes the channel when read access is revoked', async () => {
    const user = await signTestJwt(JWT_SECRET, { role: 'authenticated', sub: '0b7c5a1e-8f2d-4d7e-9c61-2f4f5e6a7b8c' });
    const h = await subscribed({ topic: 'allowed-2', token: user, isPrivate: true });
    // A refreshed token for the same user keeps the channel joined and delivering.
    await h.client.setAuth(
      await signTestJwt(JWT_SECRET, { role: 'authenticated', sub: '0b7c5a1e-8f2d-4d7e-9c61-2f4f5e6a7b8c', refreshed: true }, 7200),
    );
    await send({}, 'still_here', 'allowed-2');
    await waitFor(() => events(h).includes('still_here'), 'broadcast after token refresh');
    // Downgrading to anon revokes broadcast read under the RLS policy: the server shuts the channel.
    await h.client.setAuth(anonKey);
    await waitFor(() => count(h, 'CLOSED') > 0, 'channel closed after revocation');
    expect(h.system).toEqual([
      {
        extension: 'system',
        status: 'error',
        message: 'You no longer have permission to read from this Channel topic: allowed-2',
        channel: 'allowed-2',
      },
    ]);
  }, 20_000);

  it('answers Phoenix heartbeats', async () => {
    const seen: string[] = [];
    const client = new RealtimeClient(srv().realtimeUrl, {
      params: { apikey: anonKey },
      transport: WebSocket as unknown as WebSocketLikeConstructor,
      heartbeatIntervalMs: 100,
      heartbeatCallback: (status) => seen.push(status),
    });
    clients.push(client);
    client.channel('hb').subscribe();
    await waitFor(() => seen.filter((s) => s === 'ok').length >= 2, 'two heartbeat replies');
    expect(seen).not.toContain('timeout');
  }, 20_000);

  it('never delivers a send from a rolled-back transaction', async () => {
    const h = await subscribed({ topic: 'tx', token: serviceKey, isPrivate: true });
    await db
      .begin(async (tx) => {
        await tx`select realtime.send('{"n":1}'::jsonb, 'rolled_back', 'tx', true)`;
        throw new Error('force rollback');
      })
      .catch(noop);
    await send({ n: 2 }, 'committed', 'tx');
    await waitFor(() => events(h).includes('committed'), 'committed broadcast');
    expect(events(h)).toEqual(['committed']);
  }, 20_000);

  it('dropConnections makes the client reconnect, rejoin and receive later messages (at most once)', async () => {
    const h = await subscribed({ topic: 'flaky', token: serviceKey, isPrivate: true });
    const outage = srv().faults.dropConnections(300);
    await waitFor(() => count(h, 'CHANNEL_ERROR') > 0, 'channel error after drop');
    await send({}, 'during_outage', 'flaky'); // nobody subscribed: lost, never replayed
    await outage;
    await waitFor(() => count(h, 'SUBSCRIBED') === 2, 'rejoin after reconnect', 15_000);
    await send({ after: true }, 'after_reconnect', 'flaky');
    await waitFor(() => h.received.length > 0, 'broadcast after reconnect');
    expect(events(h)).toEqual(['after_reconnect']);
    expect(srv().stats.droppedConnections).toBeGreaterThan(0);
  }, 30_000);

  it('applies dropRate / duplicateRate / reorderWindow to deliveries', async () => {
    const h = await subscribed({ topic: 'faults', token: serviceKey, isPrivate: true });
    const { stats, faults } = srv();

    const dropped = stats.dropped;
    faults.dropRate = 1;
    await send({}, 'lost', 'faults');
    await waitFor(() => stats.dropped > dropped, 'drop counted');
    faults.dropRate = 0;

    const duplicated = stats.duplicated;
    faults.duplicateRate = 1;
    await send({}, 'twice', 'faults');
    await waitFor(() => h.received.length === 2, 'duplicate');
    expect(stats.duplicated).toBe(duplicated + 1);
    faults.duplicateRate = 0;

    faults.reorderWindow = 5;
    for (let i = 0; i < 5; i++) await send({ i }, `r${i}`, 'faults');
    await waitFor(() => h.received.length === 7, 'reordered batch');
    expect(events(h).slice(0, 2)).toEqual(['twice', 'twice']);
    expect([...events(h).slice(2)].sort()).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
  }, 20_000);

  /** A second stand-in on the same database with real-server behaviours switched on. */
  async function variant(options: Partial<Parameters<typeof startRealtimeServer>[0]>): Promise<RealtimeServer> {
    const dbUrl = new URL(ADMIN_URL);
    dbUrl.pathname = `/${dbName ?? ''}`;
    const s = await startRealtimeServer({ databaseUrl: dbUrl.href, jwtSecret: JWT_SECRET, ...options });
    variants.push(s);
    return s;
  }

  it('quota: counts every row read and every delivery; over the limit drops rows and shuts receiving channels', async () => {
    const q = await variant({ quota: { eventsPerSecond: 10, tickMs: 200, buckets: 4, channelLagMs: 300 } });
    const a = await subscribed({ topic: 'quota', token: serviceKey, isPrivate: true, server: q });
    const b = await subscribed({ topic: 'quota', token: serviceKey, isPrivate: true, server: q });
    await send({ n: 0 }, 'one', 'quota');
    await waitFor(() => a.received.length === 1 && b.received.length === 1, 'first message');
    expect(q.stats.quotaCounted).toBe(3); // 1 row read from replication + 2 deliveries
    for (let i = 1; i <= 10; i++) await send({ n: i }, 'burst', 'quota');
    // 33 counted within one 200 ms tick = 165/s >= 10/s: triggered at the next tick; the
    // deliveries are handled 300 ms later, after it, so both channels are shut.
    await waitFor(() => a.system.length > 0 && b.system.length > 0, 'shutdown system messages');
    for (const h of [a, b]) {
      expect(h.system[0]).toMatchObject({
        extension: 'system',
        status: 'error',
        message: 'Too many messages per second',
        channel: 'quota',
      });
      await waitFor(() => count(h, 'CLOSED') > 0, 'channel closed');
    }
    expect(q.quotaState().triggered).toBe(true);
    const droppedBefore = q.stats.rateLimitedRows;
    const countedBefore = q.stats.quotaCounted;
    await send({ n: 11 }, 'dropped', 'quota'); // triggered: dropped at the source, not counted
    await waitFor(() => q.stats.rateLimitedRows === droppedBefore + 1, 'row dropped at the source');
    expect(q.stats.quotaCounted).toBe(countedBefore);
    expect(q.stats.rateLimitShutdowns).toBe(2);
    expect(q.stats.rateLimitEpisodes).toBe(1);
    await waitFor(() => !q.quotaState().triggered, 'average back under the limit');
  }, 20_000);

  it('join errors arrive after the configured delay (real server: 5 s), with their reason', async () => {
    const late = await variant({ joinErrorDelayMs: 1_500 });
    const started = Date.now();
    const reason = await refusal({ topic: 'not-allowed', token: anonKey, isPrivate: true, server: late });
    expect(reason).toMatch(/^Unauthorized: You do not have permissions to read from this Channel topic: not-allowed$/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_450);
  }, 20_000);

  it('replication starts after the join ack: rows before it are never streamed, then replication_ready; or a shutdown on timeout', async () => {
    const slow = await variant({ replication: { startDelayMs: 800, readyTimeoutMs: 10_000 } });
    const h = await subscribed({ topic: 'repl', token: serviceKey, isPrivate: true, server: slow, broadcast: { replication_ready: true } });
    expect(slow.replicationLive()).toBe(false);
    const lost = slow.stats.notStreamed;
    await send({ n: 1 }, 'before_ready', 'repl');
    await waitFor(() => slow.stats.notStreamed === lost + 1, 'not streamed');
    await waitFor(() => h.system.length > 0, 'replication_ready');
    expect(h.system[0]).toMatchObject({
      extension: 'system',
      status: 'ok',
      message: 'Replication connection established',
      channel: 'repl',
    });
    await send({ n: 2 }, 'after_ready', 'repl');
    await waitFor(() => h.received.length === 1, 'streamed after ready');
    expect(events(h)).toEqual(['after_ready']);
    slow.faults.restartReplication(500); // silent slot restart
    await send({ n: 3 }, 'during_restart', 'repl');
    await waitFor(() => slow.stats.notStreamed === lost + 2, 'lost in the restart');
    expect(h.system.length).toBe(1);

    const never = await variant({ replication: { startDelayMs: 60_000, readyTimeoutMs: 300 } });
    const t = await subscribed({
      topic: 'repl-timeout',
      token: serviceKey,
      isPrivate: true,
      server: never,
      broadcast: { replication_ready: true },
    });
    await waitFor(() => t.system.length > 0 && count(t, 'CLOSED') > 0, 'shut on timeout');
    expect(t.system[0]).toMatchObject({ status: 'error', message: 'Replication connection was not established in time' });
  }, 20_000);

  it('reproduces the missing daily partition trap', async () => {
    const h = await subscribed({ topic: 'trap', token: serviceKey, isPrivate: true });
    const warnings: string[] = [];
    const dbUrl = new URL(ADMIN_URL);
    dbUrl.pathname = `/${dbName ?? ''}`;
    const watcher = postgres(dbUrl.href, { max: 1, onnotice: (n) => warnings.push(String(n.message)) });
    try {
      await db`select realtime_shim.drop_messages_partitions()`;
      // The caller's statement succeeds; the broadcast is silently lost with a WARNING.
      await watcher`select realtime.send('{"lost":true}'::jsonb, 'lost', 'trap', true)`;
      expect(warnings).toContain('WarnSendingBroadcastMessage: no partition of relation "messages" found for row');
      expect(await refusal({ topic: 'trap-2', token: serviceKey, isPrivate: true })).toBe(
        'MissingPartition: Realtime was unable to find the expected messages partition',
      );
    } finally {
      await db`select realtime_shim.create_messages_partitions()`;
      await watcher.end({ timeout: 5 });
    }
    await send({}, 'after_fix', 'trap');
    await waitFor(() => h.received.length > 0, 'broadcast after partitions restored');
    expect(events(h)).toEqual(['after_fix']);
  }, 20_000);
});
