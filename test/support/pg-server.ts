import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A private PostgreSQL instance on a loopback port, so a test can restart it without touching
 * the machine's shared server. initdb refuses to run as root, hence runuser to "postgres".
 */
export interface PrivatePostgres {
  url: string;
  restart(): void;
  stop(): void;
}

const BIN = (() => {
  try {
    return execFileSync('pg_config', ['--bindir']).toString().trim();
  } catch {
    return '/usr/lib/postgresql/15/bin';
  }
})();

function asPostgres(cmd: string, args: string[]): void {
  const root = process.getuid?.() === 0;
  execFileSync(root ? 'runuser' : cmd, root ? ['-u', 'postgres', '--', cmd, ...args] : args, { stdio: 'ignore' });
}

export function privatePostgres(port: number): PrivatePostgres {
  const dir = mkdtempSync(join(tmpdir(), 'unread-pg-'));
  chmodSync(dir, 0o777);
  const data = join(dir, 'data');
  const ctl = (action: string, extra: string[] = []) => asPostgres(join(BIN, 'pg_ctl'), [action, '-D', data, '-w', '-t', '60', ...extra]);
  asPostgres(join(BIN, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c fsync=off -c max_connections=100`;
  ctl('start', ['-o', options, '-l', join(dir, 'log')]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    restart: () => ctl('restart', ['-m', 'fast', '-o', options, '-l', join(dir, 'log')]),
    stop() {
      try {
        ctl('stop', ['-m', 'immediate']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
