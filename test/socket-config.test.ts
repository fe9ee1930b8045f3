import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config.js';
import { loadSocketConfig } from '../src/socket/config.js';

const secret = 's'.repeat(40);

describe('socket config', () => {
  it('has defaults', () => {
    const c = loadSocketConfig({ SUPABASE_JWT_SECRET: secret });
    expect(c).toMatchObject({ port: 3000, host: '127.0.0.1', redisUrl: 'redis://127.0.0.1:6379', keyPrefix: 'unread:', demo: false });
    expect(c.databaseUrl).toBeUndefined();
  });

  it('names every bad variable, without echoing the secret', () => {
    let err: unknown;
    try {
      loadSocketConfig({
        PORT: 'x',
        REDIS_URL: 'http://nope',
        UNREAD_DEMO: 'maybe',
        SUPABASE_JWT_SECRET: 'short',
        SUPABASE_JWKS_URL: 'ftp://x',
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const issues = (err as ConfigError).issues.join('\n');
    expect(issues).toMatch(/PORT must be a number/);
    expect(issues).toMatch(/REDIS_URL must be a URL starting with redis:\/\//);
    expect(issues).toMatch(/UNREAD_DEMO must be true or false/);
    expect(issues).toMatch(/SUPABASE_JWT_SECRET must be at least 32 characters \(got \[redacted\]\)/);
    expect(issues).toMatch(/SUPABASE_JWKS_URL must be a URL/);
    expect(issues).not.toMatch(/short/);
  });

  it('needs a way to verify tokens, and demo mode needs a secret and a database', () => {
    expect(() => loadSocketConfig({})).toThrow(/SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL/);
    expect(() =>
      loadSocketConfig({ SUPABASE_JWKS_URL: 'https://x.supabase.co/auth/v1/.well-known/jwks.json', UNREAD_DEMO: 'true' }),
    ).toThrow(/needs SUPABASE_JWT_SECRET[\s\S]*needs DATABASE_URL/);
    const c = loadSocketConfig({ SUPABASE_JWT_SECRET: secret, UNREAD_DEMO: 'true', DATABASE_URL: 'postgres://u@h/db', PORT: '0' });
    expect(c).toMatchObject({ demo: true, port: 0, databaseUrl: 'postgres://u@h/db' });
  });
});
