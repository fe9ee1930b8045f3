import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBridge, type RunningBridge } from '../src/launch.js';
import { testConfig, testLogger, uuid } from './support/env.js';
import { useEnv } from './support/fixture.js';
import { ensureBuilt } from './support/built-cli.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const USER = '0b7c2f4e-1d55-4f1e-9a63-0c1a1d3e5f00';

/** The README's "Library API" code block, as a user would copy it. */
function librarySnippet(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Library API'));
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('README has no ts block under "Library API"');
  return block;
}

describe('README library snippet', () => {
  const { db, r } = useEnv();
  let bridge: RunningBridge;
  beforeAll(async () => {
    ensureBuilt();
    bridge = startBridge(testConfig(db, r), testLogger());
  });
  afterAll(async () => {
    await bridge?.stop();
  });

  it('runs as written, prints the total and exits on its own', async () => {
    await db.sql`insert into chat_rooms (id, user_id, company_id, user_unread_count) values
      (${uuid()}, ${USER}, ${uuid()}, 4), (${uuid()}, ${USER}, ${uuid()}, 3)`;
    const dir = mkdtempSync(join(tmpdir(), 'unread-snippet-'));
    try {
      // Same code, with the package name pointing at this checkout's build.
      const code = librarySnippet().replace("from 'unread-sync'", `from ${JSON.stringify(join(ROOT, 'dist', 'index.js'))}`);
      writeFileSync(join(dir, 'snippet.mjs'), code);
      const child = spawn(process.execPath, [join(dir, 'snippet.mjs')], {
        env: { PATH: process.env.PATH ?? '', DATABASE_URL: db.url, REDIS_URL: r.url, UNREAD_KEY_PREFIX: r.prefix },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code_ = await new Promise<number | null | 'hung'>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve('hung');
        }, 20_000);
        child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect(code_, out).toBe(0);
      expect(out.split('\n')[0]).toBe('7');
      expect(out).toContain('unreadRooms: 2');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
