import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, settingsOf, type Scope, type Setting } from '../src/config.js';
import { redactSecrets } from '../src/env.js';
import { ErrorCode, UnreadSyncError } from '../src/errors.js';
import { loadSocketConfig } from '../src/socket/config.js';

// Service-free: the settings table is the one place a variable is written, so every entry must
// reach its field, be validated with its name in the error, and be documented in the README.

type Env = Record<string, string>;
const secret = 's'.repeat(40);
/** Minimal valid environments (the socket one satisfies its cross-variable checks for every candidate below). */
const base: Record<Scope, Env> = {
  bridge: {},
  socket: { SUPABASE_JWT_SECRET: secret, SUPABASE_JWKS_URL: 'https://base.supabase.co', DATABASE_URL: 'postgres://base@h/db' },
};
const load = (scope: Scope, env: Env): Record<string, unknown> =>
  ({ ...(scope === 'bridge' ? loadConfig(env) : loadSocketConfig(env)) }) as Record<string, unknown>;

const good = ['1', '200', '5000', 'true', 'debug', 'logical', 'name_1', 'h1:1,h2:2', 'a'.repeat(40)].concat([
  'redis://10.0.0.1:6380',
  'postgres://u@h/db',
  'https://x.supabase.co',
]);
const bad = ['maybe', '-1', '99999999999', 'x{', 'ftp://x'];
/** Free text: no value is wrong. */
const anyValue = new Set(['UNREAD_METRICS_HOST', 'SUPABASE_JWT_AUDIENCE', 'UNREAD_SOCKET_CORS_ORIGIN']);

function issuesOf(f: () => unknown): string[] {
  try {
    f();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  return [];
}

const scopes: Scope[] = ['bridge', 'socket'];

describe.each(scopes)('the settings table drives the %s config', (scope) => {
  const entries = settingsOf(scope);
  const defaults = load(scope, base[scope]);

  it('has exactly the fields of the table', () => {
    expect(Object.keys(defaults).sort()).toEqual(entries.map(([field]) => field).sort());
  });

  it.each(entries)('%s: its variable reaches the field', (field, s) => {
    const value = good.find((v) => {
      try {
        return JSON.stringify(load(scope, { ...base[scope], [s.env]: v })[field]) !== JSON.stringify(defaults[field]);
      } catch {
        return false;
      }
    });
    expect(value, `no accepted value of ${s.env} changes ${field}`).toBeDefined();
    // An empty string counts as unset.
    const { [s.env]: _, ...unset } = base[scope];
    expect(load(scope, { ...unset, [s.env]: '' })[field]).toEqual(load(scope, unset)[field]);
  });

  it.each(entries.filter(([, s]) => !anyValue.has(s.env)))('%s: a wrong value is named', (_field, s) => {
    const value = bad.find((v) => issuesOf(() => load(scope, { ...base[scope], [s.env]: v })).length > 0);
    expect(value, `no value of ${s.env} is refused`).toBeDefined();
    const issues = issuesOf(() => load(scope, { ...base[scope], [s.env]: value! }));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(new RegExp(`^${s.env} .*\\(got `));
    if (s.secret) {
      expect(issues[0]).toContain('(got [redacted])');
      expect(issues[0]).not.toContain(JSON.stringify(value));
    }
  });

  it('one error names every bad variable at once', () => {
    const env: Env = { ...base[scope] };
    const names: string[] = [];
    for (const [, s] of entries) {
      const value = bad.find((v) => issuesOf(() => load(scope, { ...base[scope], [s.env]: v })).length > 0);
      if (value === undefined) continue;
      env[s.env] = value;
      names.push(s.env);
    }
    let err: unknown;
    try {
      load(scope, env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(UnreadSyncError);
    expect((err as ConfigError).code).toBe(ErrorCode.CONFIG_INVALID);
    const issues = (err as ConfigError).issues;
    expect(issues.map((i) => i.split(' ')[0]).sort()).toEqual([...names].sort());
    for (const name of names) expect((err as ConfigError).message).toContain(`\n  - ${name} `);
  });

  it('refuses REDIS_HOST / REDIS_PORT / REDIS_PASSWORD, naming REDIS_URL and hiding the password', () => {
    const issues = issuesOf(() => load(scope, { ...base[scope], REDIS_HOST: 'h', REDIS_PASSWORD: 'hunter2hunter2', PORT: 'x' }));
    expect(issues[0]).toMatch(/^REDIS_HOST, REDIS_PASSWORD are not read .*REDIS_URL/);
    expect(issues.join('\n')).not.toContain('hunter2');
  });

  it('shows a bad URL without its password', () => {
    const issues = issuesOf(() => load(scope, { ...base[scope], REDIS_URL: 'http://u:pw-secret-1@h:1' }));
    expect(issues).toEqual([expect.stringMatching(/^REDIS_URL must be a URL/)]);
    expect(issues[0]).not.toContain('pw-secret-1');
  });
});

it("the table's secrets are scrubbed from logs and messages too (env.ts SECRET_VARS)", () => {
  const secrets = [...settingsOf('bridge'), ...settingsOf('socket')].filter(([, s]) => s.secret);
  expect(secrets.map(([, s]) => s.env).sort()).toEqual(['SUPABASE_JWT_SECRET', 'SUPABASE_SERVICE_ROLE_KEY']);
  for (const [, s] of secrets) expect(redactSecrets('key=some-secret-value', { [s.env]: 'some-secret-value' })).toBe('key=[redacted]');
});

describe('cross-variable checks', () => {
  it('bridge: log ages, supabase source', () => {
    expect(issuesOf(() => loadConfig({ UNREAD_LOG_MIN_AGE_S: '7200', UNREAD_LOG_MAX_AGE_S: '3600' }))).toEqual([
      'UNREAD_LOG_MAX_AGE_S must not be smaller than UNREAD_LOG_MIN_AGE_S',
    ]);
    expect(issuesOf(() => loadConfig({ UNREAD_SOURCE: 'supabase' }))).toEqual([
      'SUPABASE_URL is required when UNREAD_SOURCE=supabase',
      'SUPABASE_SERVICE_ROLE_KEY is required when UNREAD_SOURCE=supabase',
    ]);
    const c = loadConfig({ UNREAD_SOURCE: 'supabase', SUPABASE_URL: 'https://x.supabase.co', SUPABASE_SERVICE_ROLE_KEY: secret });
    expect(c).toMatchObject({ source: 'supabase', supabaseUrl: 'https://x.supabase.co', supabaseServiceRoleKey: secret });
    expect(loadConfig({})).toMatchObject({ supabaseUrl: null, supabaseServiceRoleKey: null });
  });

  it('cluster nodes come from REDIS_CLUSTER_NODES, else from a redis+cluster:// URL', () => {
    expect(loadConfig({}).redisClusterNodes).toEqual([]);
    // A list of hosts in the URL (redis+cluster://a:1,b:2) does not pass the URL check: use REDIS_CLUSTER_NODES.
    expect(loadConfig({ REDIS_URL: 'redis+cluster://a:1/0' }).redisClusterNodes).toEqual(['a:1']);
    expect(loadConfig({ REDIS_URL: 'redis+cluster://a:1', REDIS_CLUSTER_NODES: ' c:3 , d:4' }).redisClusterNodes).toEqual(['c:3', 'd:4']);
    expect(issuesOf(() => loadConfig({ REDIS_CLUSTER_NODES: 'c:3,' }))).toEqual([expect.stringMatching(/^REDIS_CLUSTER_NODES must be/)]);
    expect(loadSocketConfig({ SUPABASE_JWT_SECRET: secret, REDIS_URL: 'redis+cluster://a:1' }).redisClusterNodes).toEqual(['a:1']);
  });

  it('socket: DATABASE_URL has no default there, CORS origins are a list', () => {
    expect(loadConfig({}).databaseUrl).toBe('postgres://postgres@127.0.0.1:5432/postgres');
    const c = loadSocketConfig({ SUPABASE_JWT_SECRET: secret, UNREAD_SOCKET_CORS_ORIGIN: 'https://a, https://b,' });
    expect(c.databaseUrl).toBeUndefined();
    expect(c.corsOrigins).toEqual(['https://a', 'https://b']);
    expect(loadSocketConfig({ SUPABASE_JWT_SECRET: secret }).corsOrigins).toEqual([]);
    expect(issuesOf(() => loadSocketConfig({ SUPABASE_JWT_SECRET: secret, UNREAD_DB_FALLBACK: 'on' }))).toEqual([
      'UNREAD_DB_FALLBACK=true needs DATABASE_URL (the fallback reads chat_rooms)',
    ]);
  });
});

describe('README "Configuration" lists exactly the table', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('\n### Configuration\n'), readme.indexOf('\n## ', readme.indexOf('\n### Configuration\n')));
  // The section's two tables, in order: the bridge's, then the socket server's.
  const tables = section
    .split('\n\n')
    .map((block) => block.trim())
    .filter((block) => block.startsWith('| variable |'));
  /** Variables read outside the table (src/log.ts). */
  const readElsewhere = ['UNREAD_LOG_FORMAT'];

  const rows = (table: string) =>
    table
      .split('\n')
      .slice(2)
      .map((line) => line.split(' | ').map((cell) => cell.replace(/^\| |\|$/g, '').trim()));
  const names = (cell: string) => [...cell.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!);
  /** How the README writes a default: strings in backquotes, numbers and booleans bare, none as –. */
  const shown = (schema: Setting['schema']) => {
    const v: unknown = schema.parse(undefined);
    if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) return '–';
    return typeof v === 'string' ? `\`${v}\`` : String(v);
  };

  it.each(scopes.map((scope, i) => [scope, i] as const))('%s table: every variable, with its default', (scope, i) => {
    const table = tables[i];
    expect(table, `table ${i + 1} of the Configuration section`).toBeDefined();
    const byEnv = new Map(settingsOf(scope).map(([, s]) => [s.env, s]));
    const documented = new Set<string>();
    const withDefault = new Set<string>();
    for (const [variable = '', dflt = ''] of rows(table!)) {
      const vars = names(variable);
      for (const name of vars) {
        expect([...byEnv.keys(), ...readElsewhere], `${name} is in the ${scope} table but ${scope} does not read it`).toContain(name);
        documented.add(name);
      }
      if (dflt === 'as above') continue;
      // "A / B | 1 / 2": one default per variable; "A or B | –": one for all.
      const values = dflt.split(' / ');
      vars.forEach((name, j) => {
        const s = byEnv.get(name);
        if (!s) return;
        expect(values.length === 1 ? values[0] : values[j], `default of ${name}`).toBe(
          shown(scope === 'socket' && s.socketSchema ? s.socketSchema : s.schema),
        );
        withDefault.add(name);
      });
    }
    for (const [, s] of settingsOf(scope)) {
      expect([...documented], `${s.env} missing from the ${scope} table`).toContain(s.env);
      // The socket table refers to shared variables "as above", except where its default differs.
      if (scope === 'bridge' || s.scope === 'socket' || s.socketSchema) expect([...withDefault], `default of ${s.env}`).toContain(s.env);
    }
  });
});
