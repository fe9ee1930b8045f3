import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { testConfig, testLogger, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { ensureBuilt, runCli } from './support/built-cli.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

/** Runs the built CLI under `script`, so its stderr is a terminal (as when a person types it). */
function onTerminal(args: string[], env: Record<string, string>): Promise<{ code: number; output: string }> {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a}'`).join(' ');
  return new Promise((resolve) => {
    execFile(
      'script',
      ['-qec', command, '/dev/null'],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 },
      (err, stdout) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, output: stdout });
      },
    );
  });
}

describe('progress of verify and rebuild', () => {
  const { db, r } = useEnv();
  let bridge: RunningBridge;
  beforeAll(async () => {
    ensureBuilt();
    bridge = startBridge(testConfig(db, r, { UNREAD_VERIFY_INTERVAL_MS: '0' }), testLogger());
    const rows = Array.from({ length: 300 }, (_, i) => ({
      id: uuid(),
      user_id: uuid(),
      company_id: uuid(),
      user_unread_count: 1 + (i % 4),
    }));
    await db.sql`insert into chat_rooms ${db.sql(rows)}`;
  });
  afterAll(async () => {
    await bridge?.stop();
  });

  it('shows users/s on a terminal, and nothing of it in a pipe', async () => {
    const env = { DATABASE_URL: db.url, REDIS_URL: r.url, UNREAD_KEY_PREFIX: r.prefix, UNREAD_HYDRATE_BATCH_SIZE: '20' };
    const rebuilt = await onTerminal(['rebuild'], env);
    expect(rebuilt.code, rebuilt.output).toBe(0);
    expect(rebuilt.output).toMatch(/rebuild: \d+ users \(\d+\/s, [\d.]+ s\)/);
    expect(rebuilt.output).toContain('hydrated 300 users with unread');
    const verified = await onTerminal(['verify'], env);
    expect(verified.code, verified.output).toBe(0);
    expect(verified.output).toMatch(/verify: \d+ users \(\d+\/s, [\d.]+ s\)/);
    expect(verified.output).toContain('checked 300 cached users, 0 drifted');

    const piped = await runCli(['verify'], env);
    expect(piped.code).toBe(0);
    expect(piped.stderr).not.toContain('verify:');
    expect(piped.stdout.trim()).toBe('checked 300 cached users, 0 drifted, 0 repaired');
  });
});
