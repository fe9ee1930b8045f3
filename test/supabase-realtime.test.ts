/**
 * Supabase transport end to end: UPDATE chat_rooms -> trigger -> realtime.send -> test Realtime
 * server (test/support/realtime-server.ts) -> real realtime-js client in the bridge -> Redis.
 * Real Postgres and Redis; the Realtime server is the colleague's stand-in with fault injection.
 */
import { roomField } from '../src/store/keys.js';
import { RealtimeClient, type WebSocketLikeConstructor } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { supabaseQueries } from '../src/db.js';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { backoffDelay } from '../src/backoff.js';
import { parseSnapshot, visibleIn } from '../src/sources/snapshot.js';
import { SupabaseSource, userTopic, bridgeTopic } from '../src/sources/supabase.js';
import { startRealtimeForDb, REAL_PROFILE, signTestJwt, startRealtimeServer, type RealtimeServer } from './support/realtime-server.js';
import { createTestRedis, expectNoDrift, testConfig, testLogger, truth, uuid, waitForBridge, type TestRedis } from './support/env.js';
import { useEnv } from './support/fixture.js';

const JWT_SECRET = 'unread-sync-test-secret-with-at-least-32-characters';
const noop = (): void => {};

const { db, r } = useEnv({ db: { migrate: false, prefix: 'sbrt' } });
let server: RealtimeServer;
let serviceKey: string;
const stops: Array<() => Promise<void>> = [];

async function waitFor(cond: () => boolean | Promise<boolean>, label: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${label}`);
    await new Promise((res) => setTimeout(res, 10));
  }
}

function source(extra: Partial<ConstructorParameters<typeof SupabaseSource>[0]> = {}): SupabaseSource {
  return new SupabaseSource({
    supabaseUrl: server.url,
    serviceRoleKey: serviceKey,
    databaseUrl: db.url,
    bridgeName: 'default',
    shards: 4,
    catchupIntervalMs: 1_000,
    batchSize: 500,
    logMinAgeSeconds: 3600,
    logMaxAgeSeconds: 7 * 86400,
    log: testLogger(),
    backoffBaseMs: 100,
    backoffMaxMs: 1_000,
    realtime: { timeout: 3_000 },
    ...extra,
  });
}

function bridgeWith(src: SupabaseSource, redis: TestRedis = r, extra: Record<string, string> = {}): RunningBridge {
  const config = testConfig(db, redis, {
    UNREAD_SOURCE: 'supabase',
    SUPABASE_URL: server.url,
    SUPABASE_SERVICE_ROLE_KEY: serviceKey,
    UNREAD_VERIFY_INTERVAL_MS: '0',
    ...extra,
  });
  const running = startBridge(config, testLogger(), { source: src, redis: redis.redis });
  stops.push(() => running.stop());
  return running;
}

async function seedUsers(users: string[], roomsPerUser: number): Promise<void> {
  const rows = users.flatMap((u) =>
    Array.from({ length: roomsPerUser }, (_, i) => ({
      user_id: u,
      company_id: users[(users.indexOf(u) + i + 1) % users.length],
      user_unread_count: i,
      company_unread_count: (i * 3) % 5,
      is_active: true,
    })),
  );
  await db.sql`insert into chat_rooms ${db.sql(rows)}`;
}

async function hydrateAll(running: RunningBridge, users: string[]): Promise<void> {
  running.bridge.requestHydration(users);
  await waitFor(async () => (await Promise.all(users.map((u) => r.store.read(u)))).every((c) => c !== null), 'all users hydrated');
}

async function roomsOf(users: string[]): Promise<string[]> {
  const rows = await db.sql<{ id: string }[]>`select id from chat_rooms where user_id = any(${users}::uuid[]) order by id`;
  return rows.map((x) => x.id);
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

beforeAll(async () => {
  ({ server, serviceKey } = await startRealtimeForDb(db.url, JWT_SECRET));
}, 60_000);

afterAll(async () => {
  for (const stop of stops.reverse()) await stop().catch(noop);
  await server?.close();
}, 60_000);

describe('pure helpers', () => {
  it('visibleIn follows pg_visible_in_snapshot', async () => {
    const [row] = await db.sql<{ s: string }[]>`select '100:110:102,105'::pg_snapshot::text as s`;
    const s = parseSnapshot(row!.s);
    for (const x of [99n, 100n, 101n, 102n, 105n, 109n, 110n, 111n]) {
      const [v] = await db.sql<{ v: boolean }[]>`select pg_visible_in_snapshot(${x.toString()}::xid8, ${row!.s}::pg_snapshot) as v`;
      expect(visibleIn(x, s), `xid ${x}`).toBe(v!.v);
    }
  });

  it('backoff grows, is capped and jittered', () => {
    expect(backoffDelay(0, 100, 1000, () => 0)).toBe(50);
    expect(backoffDelay(0, 100, 1000, () => 1)).toBe(100);
    expect(backoffDelay(10, 100, 1000, () => 0.5)).toBe(750);
    const spread = new Set(Array.from({ length: 20 }, () => backoffDelay(3, 100, 10_000)));
    expect(spread.size).toBeGreaterThan(5);
  });
});

describe('supabase source through the test Realtime server', () => {
  it('runtime picks the supabase source from UNREAD_SOURCE and joins every bridge topic privately', async () => {
    const r2 = await createTestRedis();
    const config = testConfig(db, r2, {
      UNREAD_SOURCE: 'supabase',
      SUPABASE_URL: server.url,
      SUPABASE_SERVICE_ROLE_KEY: serviceKey,
      UNREAD_BRIDGE_NAME: 'runtime-check',
      UNREAD_REALTIME_SHARDS: '3',
    });
    const running = startBridge(config, testLogger(), { redis: r2.redis });
    try {
      await waitFor(() => [0, 1, 2].every((i) => server.subscriberCount(bridgeTopic(i), true) >= 1), 'three private bridge topics joined');
      expect(server.subscriberCount(bridgeTopic(0), false)).toBe(0);
      const [meta] = await db.sql<{ value: string }[]>`select value from unread_sync.meta where key = 'realtime_shards'`;
      expect(meta?.value).toBe('3');
    } finally {
      await running.stop();
      await r2.cleanup();
    }
  });

  it('mirrors UPDATEs live, survives drops/duplicates/reorders and a several-second outage with 0 drift, and catch-ups read only what changed', async () => {
    const src = source();
    const running = bridgeWith(src);
    await waitFor(() => src.subscribedAll(), 'bridge subscribed');

    const users = Array.from({ length: 120 }, uuid);
    await seedUsers(users, 4);
    // A big table of rooms nobody caches: the catch-up must not scale with it.
    await db.sql`
      insert into chat_rooms (user_id, company_id, user_unread_count, company_unread_count, is_active)
      select gen_random_uuid(), gen_random_uuid(), 1 + g % 5, g % 3, true from generate_series(1, 5000) g`;
    await hydrateAll(running, users);
    await waitForBridge(db.sql, 'default');
    await expectNoDrift(db.sql, r.store, users);
    const rooms = await roomsOf(users);

    // --- latency through the live path (catch-ups are rare here: 1 s interval, measured separately)
    // From the COMMIT acknowledgement (autocommit UPDATE returned) to Redis holding the value, and,
    // as an upper bound, from sending the UPDATE. Redis is polled with HGET (~0.1 ms per poll).
    const fromCommit: number[] = [];
    const fromSend: number[] = [];
    const liveBefore = src.stats.liveDelivered;
    const catchupsBefore = src.stats.catchups;
    for (let i = 0; i < 300; i++) {
      const room = rooms[i % rooms.length]!;
      const sent = performance.now();
      const [row] = await db.sql<{ user_id: string; n: number }[]>`
        update chat_rooms set user_unread_count = user_unread_count + 1 where id = ${room} returning user_id, user_unread_count as n`;
      const t0 = performance.now();
      const key = r.store.keys.user(row!.user_id);
      for (;;) {
        const v = await r.redis.hget(key, roomField(room));
        if (v !== null && Number(v.split(':')[0]) === row!.n) break;
        if (performance.now() - t0 > 10_000) throw new Error('update not mirrored within 10 s');
      }
      const done = performance.now();
      fromCommit.push(done - t0);
      fromSend.push(done - sent);
    }
    fromCommit.sort((a, b) => a - b);
    fromSend.sort((a, b) => a - b);
    const p50 = pct(fromCommit, 50);
    const p99 = pct(fromCommit, 99);
    console.log(
      `commit-to-Redis through the test Realtime server: p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms ` +
        `(from sending the UPDATE: p50 ${pct(fromSend, 50).toFixed(2)} ms, p99 ${pct(fromSend, 99).toFixed(2)} ms; n=${fromCommit.length}, ` +
        `live events ${src.stats.liveDelivered - liveBefore}, catch-ups meanwhile ${src.stats.catchups - catchupsBefore})`,
    );
    // A few are applied by a catch-up first; their live copy is then dropped as covered.
    expect(src.stats.liveDelivered - liveBefore).toBeGreaterThan(250);
    expect(p50).toBeLessThan(500);

    // --- faults while writes continue
    await waitForBridge(db.sql, 'default');
    const [{ maxId } = { maxId: '0' }] = await db.sql<
      { maxId: string }[]
    >`select coalesce(max(id), 0)::text as "maxId" from unread_sync.changes`;
    const rowsBefore = src.stats.catchupRows;
    const errorsBefore = src.stats.channelErrors + src.stats.timeouts + src.stats.closed;
    const subscribedBefore = src.stats.subscribed;

    let writing = true;
    let writes = 0;
    const writer = async (seed: number) => {
      let i = seed;
      while (writing) {
        const room = rooms[(i * 7919) % rooms.length]!;
        i++;
        // Mix of increments, reads (to 0), deactivation and reassignment-free toggles.
        const op = i % 10;
        if (op < 6)
          await db.sql`update chat_rooms set user_unread_count = user_unread_count + 1, company_unread_count = company_unread_count + 1 where id = ${room}`;
        else if (op < 8) await db.sql`update chat_rooms set user_unread_count = 0 where id = ${room}`;
        else await db.sql`update chat_rooms set is_active = not is_active where id = ${room}`;
        writes++;
      }
    };
    server.faults.dropRate = 0.2;
    server.faults.duplicateRate = 0.2;
    server.faults.reorderWindow = 5;
    const writers = [1, 2, 3, 4].map((s) => writer(s * 1000));
    await new Promise((res) => setTimeout(res, 1_500));
    await server.faults.dropConnections(4_000); // several seconds without Realtime, writes go on
    await new Promise((res) => setTimeout(res, 1_500));
    writing = false;
    await Promise.all(writers);
    server.faults.reset();

    await waitFor(() => src.subscribedAll(), 'resubscribed after the outage', 30_000);
    await waitForBridge(db.sql, 'default', 30_000);
    await expectNoDrift(db.sql, r.store, users);
    // Every user is still cached (nothing was forgotten) and equals the truth computed by SQL.
    const t = await truth(db.sql);
    for (const u of users) {
      const c = await r.store.read(u);
      expect(c, u).not.toBeNull();
      expect(c!.total).toBe(Object.values(t[u] ?? {}).reduce((a, b) => a + b, 0));
    }
    expect(writes).toBeGreaterThan(50);
    expect(server.stats.dropped).toBeGreaterThan(0);
    expect(server.stats.duplicated).toBeGreaterThan(0);
    expect(src.stats.channelErrors + src.stats.timeouts + src.stats.closed).toBeGreaterThan(errorsBefore);
    expect(src.stats.subscribed).toBeGreaterThanOrEqual(subscribedBefore + 4);

    // Catch-up cost: each committed log row is read by exactly one catch-up, so the rows the
    // catch-ups read since the checkpoint above are exactly the rows written since, not the table.
    const [{ n: changedRows } = { n: -1 }] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from unread_sync.changes where id > ${maxId}::bigint`;
    const [{ n: tableRows } = { n: -1 }] = await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes`;
    const readRows = src.stats.catchupRows - rowsBefore;
    console.log(
      `catch-ups after the faults read ${readRows} rows; ${changedRows} changed; log holds ${tableRows}; chat_rooms ${rooms.length + 5000}`,
    );
    // Exactly what changed: neither the log's older rows nor chat_rooms are read again.
    expect(readRows).toBe(changedRows);
    expect(tableRows).toBeGreaterThan(changedRows);
    await running.stop();
  });

  it('malformed payloads, unexpected events and public (wrong private flag) broadcasts: counted, never applied, bridge alive', async () => {
    const src = source({ catchupIntervalMs: 60_000 });
    const running = bridgeWith(src);
    await waitFor(() => src.subscribedAll(), 'bridge subscribed');
    const [user] = [uuid()];
    await seedUsers([user!, uuid()], 1);
    await hydrateAll(running, [user!]);
    const [room] = await roomsOf([user!]);
    const deadBefore = (await r.store.deadLetters(1000)).length;
    const deadMetricBefore = (await running.bridge.metrics.deadLetters.get()).values[0]?.value ?? 0;
    const send = (payload: unknown, event: string, isPrivate = true) =>
      db.sql`select realtime.send(${JSON.stringify(payload)}::text::jsonb, ${event}, ${bridgeTopic(0)}, ${isPrivate})`;

    const forged = { id: '9007199254740000', xid: '999999999', kind: 'set', user_id: user, room_id: room, unread: 777, negative: false };
    await send(forged, 'change', false); // public twin of the bridge topic: the private channel never sees it
    await send({ id: 'x', kind: 'set', user_id: 'not-a-uuid', xid: '1' }, 'change'); // malformed: dead-lettered
    await send({ kind: 'bogus' }, 'change');
    await send(forged, 'not-change'); // unexpected event name: rejected by the source
    const { xid: _drop, ...noXid } = forged;
    await send(noXid, 'change'); // valid event without xid: rejected (cannot be ordered against the position)

    await waitFor(async () => (await r.store.deadLetters(1000)).length >= deadBefore + 2, 'dead letters');
    await waitFor(() => src.stats.rejected >= 2, 'rejections');
    const letters = (await r.store.deadLetters(1000)) as Array<{ reason: string; source: string }>;
    expect(letters.some((l) => /user_id: must be a UUID/.test(l.reason) && l.source === 'supabase')).toBe(true);
    expect(letters.some((l) => /kind/.test(l.reason))).toBe(true);
    expect(src.stats.lastRejection).toMatch(/xid|unexpected broadcast event/);
    expect((await running.bridge.metrics.deadLetters.get()).values[0]?.value).toBeGreaterThanOrEqual(deadMetricBefore + 2);
    expect((await r.store.read(user!))?.rooms[room!]).not.toBe(777);

    // Still alive: a real change lands.
    await db.sql`update chat_rooms set user_unread_count = 41 where id = ${room!}`;
    await waitFor(async () => (await r.store.read(user!))?.rooms[room!] === 41, 'real change after garbage');
    await running.stop();
  });

  it('expired service key: clear error, counted, badges stay correct through catch-ups', async () => {
    const expired = await signTestJwt(JWT_SECRET, { role: 'service_role' }, -60);
    const r3 = await createTestRedis();
    const src = source({ serviceRoleKey: expired, bridgeName: 'expired', catchupIntervalMs: 300 });
    const running = bridgeWith(src, r3, { UNREAD_BRIDGE_NAME: 'expired' });
    try {
      const user = uuid();
      await seedUsers([user, uuid()], 1);
      const [room] = await roomsOf([user]);
      running.bridge.requestHydration([user]);
      await waitFor(async () => (await r3.store.read(user)) !== null, 'hydrated without Realtime');
      await db.sql`update chat_rooms set user_unread_count = 12 where id = ${room!}`;
      await waitFor(async () => (await r3.store.read(user))?.rooms[room!] === 12, 'applied by catch-up');
      await waitFor(() => src.stats.channelErrors + src.stats.timeouts > 0, 'channel errors counted');
      expect(src.stats.lastChannelError).toMatch(/SUPABASE_SERVICE_ROLE_KEY expired at/);
      expect(src.stats.subscribed).toBe(0);
      await expect(src.check()).rejects.toThrow(/0\/4 bridge topics subscribed.*expired/);
      expect(running.bridge.status().active).toBe(true);
    } finally {
      await running.stop();
      await r3.cleanup();
    }
  });

  it('one active bridge per name: a second one stands by while the lease is held', async () => {
    const first = source({ bridgeName: 'leased' });
    const second = source({ bridgeName: 'leased' });
    const ctl = new AbortController();
    await first.start(ctl.signal);
    // The bridge restarts a source after any failed cycle (start() again, no stop()): idempotent.
    await waitFor(() => first.subscribedAll(), 'first subscribed');
    const joinsBefore = server.stats.joins;
    await first.start(ctl.signal);
    await new Promise((res) => setTimeout(res, 300));
    expect(server.stats.joins).toBe(joinsBefore);
    expect(first.subscribedAll()).toBe(true);
    try {
      const standby = new AbortController();
      setTimeout(() => standby.abort(), 1_500);
      await expect(second.start(standby.signal)).rejects.toThrow(/standing by/);
    } finally {
      await first.stop();
      await second.stop();
    }
    // Released on stop: the next one takes over at once.
    const third = source({ bridgeName: 'leased' });
    await third.start(new AbortController().signal);
    await third.stop();

    // A crashed holder's lease expires; after a takeover its checkpoint writes are refused (fencing).
    const [{ s: snap } = { s: '' }] = await db.sql<{ s: string }[]>`select pg_current_snapshot()::text as s`;
    expect(await supabaseQueries.acquireLease(db.sql, 'fenced', 'a', 300)).toBe(true);
    expect(await supabaseQueries.acquireLease(db.sql, 'fenced', 'b', 300)).toBe(false);
    await new Promise((res) => setTimeout(res, 400));
    expect(await supabaseQueries.acquireLease(db.sql, 'fenced', 'b', 10_000)).toBe(true);
    expect(await supabaseQueries.saveCheckpointLeased(db.sql, 'fenced', 'a', snap)).toBe(false);
    expect(await supabaseQueries.saveCheckpointLeased(db.sql, 'fenced', 'b', snap)).toBe(true);
  });
});

describe('RLS on realtime.messages (private topics), join errors 5 s late like the real server', () => {
  const clients: RealtimeClient[] = [];
  // The real RealtimeChannel.join_error sleeps CHANNEL_ERROR_BACKOFF_MS (5 s) before the error
  // reply: a refusal must be told apart from a timeout only with a join timeout above that.
  let late: RealtimeServer;
  beforeAll(async () => {
    late = await startRealtimeServer({ databaseUrl: db.url, jwtSecret: JWT_SECRET, joinErrorDelayMs: REAL_PROFILE.joinErrorDelayMs });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.removeAllChannels().catch(noop)));
    await late?.close();
  });

  async function join(token: string, topic: string): Promise<{ status: string; message?: string; received: unknown[]; ms: number }> {
    const client = new RealtimeClient(late.realtimeUrl, {
      params: { apikey: token },
      transport: WebSocket as unknown as WebSocketLikeConstructor,
      timeout: 10_000, // realtime-js default; the 5 s error delay fits inside it
    });
    clients.push(client);
    await client.setAuth(token);
    const started = Date.now();
    const out: { status: string; message?: string; received: unknown[]; ms: number } = { status: '', received: [], ms: 0 };
    client
      .channel(topic, { config: { private: true } })
      .on('broadcast', { event: '*' }, (m) => out.received.push(m.payload))
      .subscribe((status, err) => {
        if (!out.status) Object.assign(out, { status, message: err?.message, ms: Date.now() - started });
      });
    await waitFor(() => out.status !== '', `join ${topic}`, 15_000);
    return out;
  }

  it('a user joins only their own badge topic; other users and clients never read the bridge topics', { timeout: 30_000 }, async () => {
    await db.sql`insert into unread_sync.meta (key, value) values ('realtime_user_topics', 'on')
                 on conflict (key) do update set value = 'on'`;
    // An app-wide permissive policy must not open unread-sync topics (ours is restrictive).
    await db.sql`create policy app_reads_everything on realtime.messages for select to authenticated using (true)`;
    try {
      const alice = uuid();
      const bob = uuid();
      await seedUsers([alice, bob], 1);
      const aliceJwt = await signTestJwt(JWT_SECRET, { role: 'authenticated', sub: alice });
      const anonJwt = await signTestJwt(JWT_SECRET, { role: 'anon' });

      const own = await join(aliceJwt, userTopic(alice));
      expect(own.status).toBe('SUBSCRIBED');
      const [room] = await roomsOf([alice]);
      await db.sql`update chat_rooms set user_unread_count = 5 where id = ${room!}`;
      await waitFor(() => own.received.length > 0, 'badge event on the user topic');
      // One message per transaction: {xid, changes: [...]} with this user's changes only.
      expect(own.received[0]).toMatchObject({ changes: [{ kind: 'set', user_id: alice, room_id: room, unread: 5 }] });

      // Refusals come 5 s late, with their reason (not a TIMED_OUT); run side by side.
      const [other, bridge, anon] = await Promise.all([
        join(aliceJwt, userTopic(bob)),
        join(aliceJwt, bridgeTopic(0)),
        join(anonJwt, userTopic(alice)),
      ]);
      expect(other.status).toBe('CHANNEL_ERROR');
      expect(other.message).toMatch(/Unauthorized/);
      expect(bridge.status).toBe('CHANNEL_ERROR');
      expect(bridge.message).toMatch(/Unauthorized/);
      expect(anon.status).toBe('CHANNEL_ERROR');
      for (const j of [other, bridge, anon]) expect(j.ms).toBeGreaterThanOrEqual(REAL_PROFILE.joinErrorDelayMs - 50);
    } finally {
      await db.sql`drop policy app_reads_everything on realtime.messages`;
      await db.sql`update unread_sync.meta set value = 'off' where key = 'realtime_user_topics'`;
    }
  });
});
