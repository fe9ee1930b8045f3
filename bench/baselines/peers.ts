import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import type { Sql } from '../../src/db.js';

/**
 * Issue 13's two peers, installed beside ours in the bench database (their own schemas,
 * peer_notify and peer_pg; triggers created disabled). `useSystem` switches which system's
 * triggers are live on chat_rooms, so each is measured alone on the same table and data.
 */
export type LiveSystem = 'none' | 'ours' | 'notify' | 'postgres';

const PEER_TRIGGERS = { notify: 'peer_notify_capture', postgres: 'peer_pg_capture' } as const;
const sqlFile = (name: string) => readFileSync(new URL(name, import.meta.url), 'utf8');

export async function installPeers(sql: Sql): Promise<void> {
  await sql.unsafe(sqlFile('./peer-notify.sql'));
  await sql.unsafe(sqlFile('./peer-postgres.sql'));
}

export async function uninstallPeers(sql: Sql): Promise<void> {
  await sql.unsafe('drop schema if exists peer_notify cascade; drop schema if exists peer_pg cascade');
}

/** Our triggers on chat_rooms (any function in schema unread_sync), with their enabled state. */
async function ourTriggers(sql: Sql): Promise<Array<{ name: string; enabled: string }>> {
  return sql<{ name: string; enabled: string }[]>`
    select t.tgname as name, t.tgenabled as enabled
      from pg_trigger t join pg_proc p on p.oid = t.tgfoid join pg_namespace n on n.oid = p.pronamespace
     where t.tgrelid = 'public.chat_rooms'::regclass and not t.tgisinternal and n.nspname = 'unread_sync'`;
}

const ENABLE: Record<string, string> = { O: 'enable', A: 'enable always', R: 'enable replica', D: 'disable' };
const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * Makes exactly one system's capture live. Our triggers' states as installed are remembered the
 * first time (ENABLE ALWAYS, see README) and put back exactly; whatever triggers other changes
 * add in schema unread_sync are switched with them.
 */
export class TriggerSwitch {
  private saved: Array<{ name: string; enabled: string }> | null = null;
  constructor(private readonly sql: Sql) {}

  async use(system: LiveSystem): Promise<void> {
    this.saved ??= (await ourTriggers(this.sql)).filter((t) => t.enabled !== 'D');
    for (const t of this.saved) {
      await this.sql.unsafe(`alter table public.chat_rooms ${system === 'ours' ? ENABLE[t.enabled] : 'disable'} trigger ${ident(t.name)}`);
    }
    const present = new Set(
      (
        await this.sql<{ name: string }[]>`
        select tgname as name from pg_trigger where tgrelid = 'public.chat_rooms'::regclass and tgname like 'peer\_%'`
      ).map((t) => t.name),
    );
    for (const [peer, trigger] of Object.entries(PEER_TRIGGERS)) {
      if (!present.has(trigger)) continue;
      await this.sql.unsafe(`alter table public.chat_rooms ${peer === system ? 'enable' : 'disable'} trigger ${trigger}`);
    }
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what this rejects
const ROOM = /^[^\s\x00-\x1f]{1,256}$/;

/** Peer (a)'s Node side: LISTEN peer_notify; per notification HINCRBY the total, HSET the room. */
export class NotifyPeerListener {
  private sql: postgres.Sql | null = null;
  private redis: Redis | null = null;
  received = 0;
  lastAt = 0;

  constructor(
    private readonly dbUrl: string,
    private readonly redisUrl: string,
    private readonly prefix: string,
  ) {}

  key(user: string): string {
    return `${this.prefix}pn:{${user}}`;
  }

  async start(): Promise<void> {
    this.redis = new Redis(this.redisUrl, { enableAutoPipelining: true });
    this.sql = postgres(this.dbUrl, { max: 1, onnotice: () => {} });
    const redis = this.redis;
    await this.sql.listen('peer_notify', (payload) => {
      this.received++;
      this.lastAt = performance.now();
      const [user, room, delta, value] = payload.split(' ');
      if (!user || !UUID.test(user) || !room || !ROOM.test(room)) return;
      // Total first: it is what a badge shows (and what the harness watches).
      void redis.hincrby(this.key(user), 't', Number(delta)).catch(() => {});
      void redis.hset(this.key(user), `r:${room}`, Number(value)).catch(() => {});
    });
  }

  /**
   * Waits until no notification arrived for `quietMs` (at most `maxMs`); returns how long after
   * the call the last one came: the listener's backlog when the writers stopped.
   */
  async drain(quietMs = 200, maxMs = 30_000): Promise<number> {
    const t0 = performance.now();
    while (performance.now() - this.lastAt < quietMs && performance.now() - t0 < maxMs) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return Math.max(0, this.lastAt - t0);
  }

  async stop(): Promise<void> {
    await this.sql?.end({ timeout: 5 });
    this.redis?.disconnect();
    this.sql = null;
    this.redis = null;
  }
}
