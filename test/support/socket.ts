import { randomBytes } from 'node:crypto';
import { io as ioClient, type Socket } from 'socket.io-client';
import type { Logger } from '../../src/log.js';
import { mintToken } from '../../src/socket/auth.js';
import { loadSocketConfig, type SocketConfig } from '../../src/socket/config.js';
import type { TotalUnreadPayload } from '../../src/socket/badges.js';
import { startSocketServer, type RunningSocketServer } from '../../src/socket/server.js';
import type { RedisClient } from '../../src/store/store.js';
import type { TestRedis } from './env.js';

export const testSecret = (): string => randomBytes(32).toString('hex');

export function socketConfig(r: TestRedis, secret: string, extra: Record<string, string> = {}): SocketConfig {
  return loadSocketConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: r.url,
    UNREAD_KEY_PREFIX: r.prefix,
    SUPABASE_JWT_SECRET: secret,
    UNREAD_SOCKET_RECONCILE_MS: '200',
    UNREAD_HYDRATE_TIMEOUT_MS: '5000',
    LOG_LEVEL: 'silent',
    ...extra,
  });
}

export function startTestSocketServer(
  config: SocketConfig,
  log: Logger,
  overrides: { redis?: RedisClient } = {},
): Promise<RunningSocketServer> {
  return startSocketServer(config, log, overrides);
}

/** A connected client that records every badge event it receives. */
export interface BadgeClient {
  socket: Socket;
  userId: string;
  events: TotalUnreadPayload[];
  last(): TotalUnreadPayload | undefined;
  close(): void;
}

export async function connectClient(
  url: string,
  auth: { token?: string; header?: string },
  userId: string,
  timeoutMs = 10_000,
): Promise<BadgeClient> {
  const socket = ioClient(url, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
    ...(auth.token ? { auth: { token: auth.token } } : {}),
    ...(auth.header ? { extraHeaders: { authorization: auth.header } } : {}),
  });
  const events: TotalUnreadPayload[] = [];
  socket.on('total-unread-count-updated', (p: TotalUnreadPayload) => events.push(p));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (err: Error) => {
      socket.close();
      reject(err);
    });
  });
  return { socket, userId, events, last: () => events.at(-1), close: () => socket.close() };
}

/** Connects and expects a refusal; resolves with the connect_error message. */
export async function refusal(url: string, auth: { token?: string; header?: string }): Promise<string> {
  try {
    const c = await connectClient(url, auth, 'none');
    c.close();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('connection was accepted');
}

export const token = (secret: string, userId: string, expiresInSeconds = 300) => mintToken(secret, userId, { expiresInSeconds });

export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sum = (rooms: Record<string, number> | undefined): number => Object.values(rooms ?? {}).reduce((a, b) => a + b, 0);

export interface SocketServerProcess {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Runs a socket server in a child process (its own event loop, Redis connections and subscriptions). */
export async function spawnSocketServer(env: Record<string, string>): Promise<SocketServerProcess> {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const entry = fileURLToPath(new URL('./socket-server-process.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('socket server process did not start within 30 s')), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { url: string }).url);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`socket server process exited with ${code}`));
    });
  });
  return {
    url,
    pid: child.pid as number,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
