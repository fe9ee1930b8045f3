import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { bridgeEnv, exited } from '../support/processes.js';
import { freePort, runCli, spawnCli, type CliChild, type CliRun } from '../support/built-cli.js';
import { sleep } from '../../src/sleep.js';

// The adversary's tools: psql, redis-cli and the built CLI (`node dist/cli.js`), run as processes,
// exactly as an operator (or an attacker with shell access) would use them.

const run = promisify(execFile);

/**
 * Runs SQL through psql (ON_ERROR_STOP; several statements in one -c are one transaction), returns
 * its unaligned, tuples-only output. Asynchronous, so the test's own write load keeps running.
 */
export async function psql(url: string, sql: string): Promise<string> {
  const { stdout } = await run('psql', [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql], { encoding: 'utf8' });
  return stdout.trim();
}

/**
 * psql, retried when Postgres aborts it as a deadlock victim (what an app does too): a permutation
 * under a deferrable key waits on other writers' in-progress index entries and can deadlock with
 * them. Returns the output and how many retries it took.
 */
export async function psqlRetry(url: string, sql: string): Promise<{ out: string; retries: number }> {
  for (let retries = 0; ; retries++) {
    try {
      return { out: await psql(url, sql), retries };
    } catch (err) {
      if (retries >= 5 || !/deadlock detected/.test(String((err as { stderr?: string }).stderr))) throw err;
    }
  }
}

/** psql in the background on a script given on stdin (a transaction held open, for instance). */
export function psqlBackground(url: string, script: string): ChildProcess {
  const child = spawn('psql', [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At'], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin?.end(script);
  return child;
}

/** Runs redis-cli against `url` with `args`, returns its output. */
export function redisCli(url: string, ...args: string[]): string {
  return execFileSync('redis-cli', ['-u', url, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

export interface CliBridge {
  child: CliChild;
  port: number;
  env: Record<string, string>;
  /** A counter or gauge from /metrics (NaN when absent). */
  metric(name: string): Promise<number>;
  readyz(): Promise<{ status: number; text: string }>;
  waitReady(): Promise<void>;
  stop(): Promise<void>;
}

/** `node dist/cli.js bridge` as a process, with its /metrics and /readyz on a free port. */
export async function cliBridge(
  databaseUrl: string,
  redisUrl: string,
  prefix: string,
  extra: Record<string, string> = {},
): Promise<CliBridge> {
  const port = await freePort();
  const env = bridgeEnv(databaseUrl, redisUrl, prefix, {
    UNREAD_METRICS_PORT: String(port),
    UNREAD_DB_CHECK_INTERVAL_MS: '200',
    UNREAD_VERIFY_INTERVAL_MS: '200',
    ...extra,
  });
  const child = spawnCli(['bridge'], env);
  const base = `http://127.0.0.1:${port}`;
  const bridge: CliBridge = {
    child,
    port,
    env,
    async metric(name) {
      const text = await (await fetch(`${base}/metrics`)).text();
      return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    },
    async readyz() {
      const res = await fetch(`${base}/readyz`);
      return { status: res.status, text: await res.text() };
    },
    async waitReady() {
      for (let i = 0; i < 400; i++) {
        if (child.exitCode !== null) throw new Error(`bridge exited ${child.exitCode}:\n${child.stderrText()}`);
        const ok = await fetch(`${base}/readyz`).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) return;
        await sleep(50);
      }
      throw new Error(`bridge on ${port} never ready:\n${child.stderrText().slice(-3000)}`);
    },
    async stop() {
      child.kill('SIGCONT');
      child.kill('SIGTERM');
      await exited(child);
    },
  };
  await bridge.waitReady();
  return bridge;
}

/** `node dist/cli.js <args>` against the bridge's database, Redis and prefix. */
export function cli(bridge: CliBridge, args: string[], extra: Record<string, string> = {}): Promise<CliRun> {
  return runCli(args, { ...bridge.env, UNREAD_METRICS_PORT: '0', LOG_LEVEL: 'warn', ...extra }, 60_000);
}

/** Polls `cond` every 25 ms until true, or throws after `timeoutMs`. */
export async function until(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(25);
  }
}
