import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { parseEvent } from '../src/events.js';
import { parseUserId } from '../src/ids.js';
import { UnreadReader } from '../src/read/reader.js';
import { truth, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import type { SteppedBridge } from './support/bridge.js';
import { spawnCli, exited, bridgeEnv } from './support/processes.js';

const HOSTILE = [
  "' or 1=1 --",
  'user_id.eq.x,company_id.eq.y', // the seed's PostgREST .or() filter injection
  '}{',
  'a}:u:{b',
  'x\r\nDEL *\r\n',
  '*',
  '9'.repeat(400),
  '',
  '00000000-0000-0000-0000-00000000000g',
  '{11111111-1111-1111-1111-111111111111}',
];

describe('hostile input is rejected before it reaches SQL or Redis', () => {
  const env = useEnv();
  const { db, r } = env;
  let stepper: SteppedBridge;
  beforeAll(async () => {
    stepper = await env.steppedBridge(); // stopped by the fixture
  });

  it('reader API: every hostile id is a clear InvalidIdError and no key is written', async () => {
    const reader = new UnreadReader(r.store, { hydrateTimeoutMs: 100 });
    for (const id of HOSTILE) {
      await expect(reader.getCounts(id)).rejects.toThrow(/user id must be a UUID/);
      await expect(reader.getTotal(id)).rejects.toThrow(/must be a UUID/);
    }
    expect(await r.redis.keys(`${r.prefix}*`)).toEqual([]);
    expect(() => parseUserId(42)).toThrow(/got number/);
  });

  it('CLI: a hostile user id exits non-zero with a clear message', async () => {
    const child = spawnCli(['badge', "x'; drop table chat_rooms; --"], bridgeEnv(db.url, r.url, r.prefix));
    expect(await exited(child)).not.toBe(0);
    expect(child.output()).toMatch(/user id must be a UUID/);
  });

  it('malformed events in the log are dead-lettered with a reason; the bridge keeps applying good ones', async () => {
    const [u, c] = [uuid(), uuid()];
    const room = uuid();
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values (${room}, ${u}, ${c}, 1)`;
    await stepper.hydrate([u]);
    // Rows no trigger would write: someone wrote to the log by hand.
    await db.sql`insert into unread_sync.changes (kind, user_id, room_id, unread) values
      ('set', null, ${room}, 3), ('set', ${u}, ${room}, -5), ('explode', ${u}, ${room}, 1), ('set', ${u}, null, 2)`;
    await db.sql`update chat_rooms set user_unread_count = 4 where id = ${room}`;
    await stepper.drain();
    const letters = (await r.store.deadLetters(10)) as Array<{ reason: string }>;
    expect(letters).toHaveLength(4);
    expect(letters.map((l) => l.reason).join('\n')).toMatch(/user_id/);
    expect(letters.map((l) => l.reason).join('\n')).toMatch(/unread/);
    expect(letters.map((l) => l.reason).join('\n')).toMatch(/kind/);
    expect((await r.store.read(u))?.rooms).toEqual({ [room]: 4 });
    expect((await truth(db.sql))[u]).toEqual({ [room]: 4 });
  });

  it('event validation: quotes, CR/LF, braces and huge numbers are refused', () => {
    const good = { id: '12', kind: 'set', user_id: uuid(), room_id: uuid(), unread: 3 };
    expect(parseEvent(good).ok).toBe(true);
    for (const bad of [
      { ...good, user_id: 'a}:u:{b' },
      { ...good, room_id: "x'\r\n" },
      { ...good, unread: 1e20 },
      { ...good, unread: 1.5 },
      { ...good, id: '99999999999999999999' },
      { ...good, id: '1e3' },
      { ...good, kind: 'SET' },
      null,
      'set',
    ]) {
      const parsed = parseEvent(bad);
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.reason.length).toBeGreaterThan(5);
    }
  });

  it('hydration requests with hostile ids are dead-lettered, never queried', async () => {
    await r.store.requestHydration(["'; select pg_sleep(10); --"]);
    await stepper.bridge.runOnce();
    const [latest] = (await r.store.deadLetters(1)) as Array<{ reason: string; event: unknown }>;
    expect(latest?.reason).toMatch(/must be a UUID/);
  });
});

describe('configuration', () => {
  it('defaults are local and valid', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toMatch(/^postgres:\/\/.*127\.0\.0\.1:5432/);
    expect(c.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(c.keyPrefix).toBe('unread:');
  });

  it('names every bad variable in one error', () => {
    try {
      loadConfig({
        DATABASE_URL: 'mysql://x',
        REDIS_URL: 'not a url',
        UNREAD_KEY_PREFIX: 'a{b}',
        UNREAD_BATCH_SIZE: '0',
        UNREAD_HYDRATE_TIMEOUT_MS: 'soon',
        UNREAD_AUTO_MIGRATE: 'maybe',
      });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const text = (err as ConfigError).message;
      for (const name of [
        'DATABASE_URL',
        'REDIS_URL',
        'UNREAD_KEY_PREFIX',
        'UNREAD_BATCH_SIZE',
        'UNREAD_HYDRATE_TIMEOUT_MS',
        'UNREAD_AUTO_MIGRATE',
      ]) {
        expect(text).toContain(name);
      }
      expect(text).toMatch(/UNREAD_BATCH_SIZE must be at least 1/);
      expect((err as ConfigError).issues).toHaveLength(6);
    }
  });

  it('the CLI prints config errors and exits 2', async () => {
    const child = spawnCli(['verify'], { UNREAD_BATCH_SIZE: '-3' });
    expect(await exited(child)).toBe(2);
    expect(child.output()).toMatch(/UNREAD_BATCH_SIZE must be at least 1/);
  });
});
