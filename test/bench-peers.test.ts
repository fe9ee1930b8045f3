// The bench's issue 13 peers (bench/baselines/peers.ts): each computes what it claims from
// real writes, the trigger switch makes exactly one system live and puts ours back as installed,
// and the README block rewrite touches only the marked block.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installPeers, NotifyPeerListener, TriggerSwitch, uninstallPeers } from '../bench/baselines/peers.js';
import { rewriteReadmeBlock } from '../bench/issue13-report.js';
import { runHarness } from '../bench/push-latency.js';
import { uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';

const { db, r } = useEnv();

beforeAll(async () => {
  await installPeers(db.sql);
});

afterAll(async () => {
  await uninstallPeers(db.sql);
});

const states = async () =>
  Object.fromEntries(
    (
      await db.sql<{ name: string; enabled: string }[]>`
        select tgname as name, tgenabled as enabled from pg_trigger
         where tgrelid = 'public.chat_rooms'::regclass and not tgisinternal order by tgname`
    ).map((t) => [t.name, t.enabled]),
  );
const logged = async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from unread_sync.changes`)[0]!.n;

async function until(check: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe('bench peers', () => {
  it('switches exactly one system live and restores our triggers as installed', async () => {
    const before = await states();
    expect(before.peer_notify_capture).toBe('D');
    expect(before.peer_pg_capture).toBe('D');
    const sw = new TriggerSwitch(db.sql);
    await sw.use('notify');
    const during = await states();
    expect(during.peer_notify_capture).toBe('O');
    expect(during.peer_pg_capture).toBe('D');
    for (const [name, state] of Object.entries(during)) if (name.startsWith('unread_sync_')) expect(state).toBe('D');
    const n0 = await logged();
    await db.sql`insert into chat_rooms (user_id, company_id, user_unread_count) values (${uuid()}, ${uuid()}, 4)`;
    expect(await logged()).toBe(n0);
    await sw.use('ours');
    expect(await states()).toEqual(before);
    await db.sql`insert into chat_rooms (user_id, company_id, user_unread_count) values (${uuid()}, ${uuid()}, 4)`;
    expect(await logged()).toBeGreaterThan(n0);
  });

  it('LISTEN/NOTIFY peer: the listener keeps each owner total in Redis', async () => {
    const sw = new TriggerSwitch(db.sql);
    const listener = new NotifyPeerListener(db.url, r.url, r.prefix);
    const [a, b, c] = [uuid(), uuid(), uuid()];
    const total = async (u: string) => Number((await r.redis.hget(listener.key(u), 't')) ?? 0);
    await sw.use('notify');
    await listener.start();
    try {
      const [room] = await db.sql<{ id: string }[]>`
        insert into chat_rooms (user_id, company_id, user_unread_count, company_unread_count)
        values (${a}, ${c}, 3, 2) returning id::text as id`;
      await until(async () => (await total(a)) === 3 && (await total(c)) === 2);
      await db.sql`update chat_rooms set user_unread_count = 5 where id = ${room!.id}`;
      await until(async () => (await total(a)) === 5);
      await db.sql`update chat_rooms set user_id = ${b} where id = ${room!.id}`;
      await until(async () => (await total(a)) === 0 && (await total(b)) === 5);
      await db.sql`update chat_rooms set is_active = false where id = ${room!.id}`;
      await until(async () => (await total(b)) === 0 && (await total(c)) === 0);
      expect(await r.redis.hget(listener.key(b), `r:${room!.id}`)).toBe('0');
    } finally {
      await listener.stop();
      await sw.use('ours');
    }
  });

  it('Postgres-only peer: the totals table matches the rows after inserts, updates, moves and deletes', async () => {
    const sw = new TriggerSwitch(db.sql);
    await sw.use('postgres');
    try {
      const owners = Array.from({ length: 6 }, () => uuid());
      const ids: string[] = [];
      for (let i = 0; i < 30; i++) {
        const [row] = await db.sql<{ id: string }[]>`
          insert into chat_rooms (user_id, company_id, user_unread_count, company_unread_count, is_active)
          values (${owners[i % 3]!}, ${owners[3 + (i % 3)]!}, ${i % 7}, ${i % 5}, ${i % 4 !== 0}) returning id::text as id`;
        ids.push(row!.id);
      }
      await db.sql`update chat_rooms set user_unread_count = user_unread_count + 2 where id = any(${ids.slice(0, 10)}::uuid[])`;
      await db.sql`update chat_rooms set user_id = ${owners[1]!}, company_unread_count = 9 where id = any(${ids.slice(10, 15)}::uuid[])`;
      await db.sql`update chat_rooms set is_active = not is_active where id = any(${ids.slice(15, 20)}::uuid[])`;
      await db.sql`delete from chat_rooms where id = any(${ids.slice(20, 25)}::uuid[])`;
      const rows = await db.sql<{ owner: string; expected: number; got: number }[]>`
        with truth as (
          select owner, sum(unread)::int as expected from (
            select user_id as owner, case when is_active then user_unread_count else 0 end as unread from chat_rooms
            union all
            select company_id, case when is_active then company_unread_count else 0 end from chat_rooms) s
           where owner = any(${owners}::uuid[]) group by owner)
        select t.owner::text as owner, t.expected, coalesce(p.total, 0)::int as got
          from truth t left join peer_pg.user_totals p on p.user_id = t.owner`;
      expect(rows.length).toBe(6);
      for (const row of rows) expect(row.got, row.owner).toBe(row.expected);
    } finally {
      await sw.use('ours');
    }
  });

  it('external harness: every commit the peer applies is seen once; a key nobody writes is never seen', async () => {
    const sw = new TriggerSwitch(db.sql);
    const listener = new NotifyPeerListener(db.url, r.url, r.prefix);
    const rooms: Array<{ user: string; room: string }> = [];
    for (let i = 0; i < 5; i++) {
      const user = uuid();
      const [row] = await db.sql<
        { id: string }[]
      >`insert into chat_rooms (user_id, company_id) values (${user}, ${uuid()}) returning id::text as id`;
      rooms.push({ user, room: row!.id });
    }
    await sw.use('notify');
    await listener.start();
    try {
      const plan = (key: (u: string) => string) => ({
        dbUrl: db.url,
        redisUrl: r.url,
        trackPrefix: `${r.prefix}pn:`,
        targets: rooms.map((x) => ({ ...x, key: key(x.user), field: 't' })),
        rates: [50],
        durationMs: 600,
        idle: { samples: 2, intervalMs: 100 },
      });
      const seen = await runHarness(plan((u) => listener.key(u)));
      for (const run of [seen.runs[0]!, seen.idle!]) {
        expect(run.commits).toBeGreaterThan(0);
        expect(run.unacked).toBe(0);
        expect(run.lost).toBe(0);
        expect(run.visible).toBe(run.commits);
        expect(run.commitToRedis.count).toBe(run.commits);
      }
      // Same commits, watching keys under the prefix that nothing writes: nothing may count.
      const unseen = await runHarness({ ...plan((u) => `${r.prefix}pn:nobody:${u}`), idle: null, visibleWaitMs: 1_000 });
      expect(unseen.runs[0]!.commits).toBeGreaterThan(0);
      expect(unseen.runs[0]!.visible).toBe(0);
      expect(unseen.runs[0]!.lost).toBe(unseen.runs[0]!.commits);
    } finally {
      await listener.stop();
      await sw.use('ours');
    }
  });

  it('README block rewrite replaces only what lies between the markers', () => {
    const dir = mkdtempSync(join(tmpdir(), 'readme-'));
    try {
      const file = join(dir, 'README.md');
      // The prose may name the markers inline: only markers on lines of their own count.
      const prose = 'rewrites the block between `<!-- bench:begin -->` and `<!-- bench:end -->`.\n';
      writeFileSync(file, `# t\n\n${prose}before\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\nafter\n`);
      rewriteReadmeBlock(file, '| new | table |\n');
      expect(readFileSync(file, 'utf8')).toBe(`# t\n\n${prose}before\n<!-- bench:begin -->\n| new | table |\n<!-- bench:end -->\nafter\n`);
      writeFileSync(file, 'no markers\n');
      expect(() => rewriteReadmeBlock(file, 'x')).toThrow(/bench:begin/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
