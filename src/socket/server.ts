import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import { redactSecrets } from '../env.js';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { readinessReport, type Check } from '../ops.js';
import { redisProblem } from '../problems.js';
import type { CountsFallback } from '../read/reader.js';
import { createRedis, type RedisClient } from '../store/store.js';
import { attachUnreadBadges, COUNTS_EVENT, ROOMS_EVENT, TOTAL_EVENT, type UnreadBadges } from './badges.js';
import type { SocketConfig } from './config.js';
import { sendJson, type HttpRoute } from './http.js';
import { socketMetrics } from './metrics.js';

export interface RunningSocketServer {
  /** Base URL clients connect to, e.g. http://127.0.0.1:3000 */
  url: string;
  port: number;
  http: HttpServer;
  io: Server;
  badges: UnreadBadges;
  close(): Promise<void>;
}

/** What a launcher adds to the server once its badges exist (the demo: its routes and adapter). */
export interface SocketServerExtension {
  /** Asked after /healthz, /readyz and /metrics, before the index and the 404. */
  handle?: HttpRoute;
  /** Released with the server, after the sockets and before Redis. */
  close?: () => Promise<void>;
}

export interface SocketServerOverrides {
  redis?: RedisClient;
  /** More /readyz checks (e.g. the bridge's when both run in one process). */
  readiness?: Record<string, Check>;
  /** Answer `/` with what this server is and its endpoints (`start`, for a first visit). */
  index?: boolean;
  /** Badge reads while Redis is down (UNREAD_DB_FALLBACK); the launcher passes a DbFallback. */
  fallback?: CountsFallback;
  /** Called once the badges exist (demo mode builds its routes on them). */
  extend?: (badges: UnreadBadges) => SocketServerExtension;
}

/**
 * HTTP + Socket.IO server: badges over Socket.IO, /healthz, /readyz, /metrics. It reads Redis
 * only; the database fallback and the demo routes are handed in by the launcher
 * (startServe in src/launch.ts, what `unread-sync serve` runs). Resolves once listening.
 */
export async function startSocketServer(
  config: SocketConfig,
  log: Logger,
  overrides: SocketServerOverrides = {},
): Promise<RunningSocketServer> {
  // The flags are read here, but their database side lives in the launcher: a config that asks for
  // it without it must not silently serve less.
  if (config.dbFallback && !overrides.fallback) {
    throw new UnreadSyncError(
      ErrorCode.CONFIG_INVALID,
      'UNREAD_DB_FALLBACK=true needs the database fallback: start the server with startServe (it wires it)',
    );
  }
  if (config.demo && !overrides.extend) {
    throw new UnreadSyncError(
      ErrorCode.CONFIG_INVALID,
      'UNREAD_DEMO=true needs the demo routes: start the server with startServe or startDemo',
    );
  }
  const redis = overrides.redis ?? createRedis(config.redisUrl, { clusterNodes: config.redisClusterNodes });
  if (!overrides.redis) {
    // ioredis reports every failed reconnect; one line per distinct error is enough.
    let last: string | null = null;
    redis.on('error', (err: Error) => {
      if (err.message !== last) log.warn({ err: redactSecrets(err.message) }, 'redis connection error');
      last = err.message;
    });
    redis.on('ready', () => {
      last = null;
    });
  }
  const dbFallback = overrides.fallback !== undefined;
  let extension: SocketServerExtension = {};

  const http = createServer((req, res) => {
    void route(req, res).catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, 'http request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
    });
  });
  async function route(req: IncomingMessage, res: ServerResponse) {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/healthz' && req.method === 'GET') {
      sendJson(res, 200, { ok: true, users: badges.connectedUsers().length });
      return;
    }
    if (path === '/readyz' && req.method === 'GET') {
      // Ready = Redis answers now (a socket server without Redis cannot serve badges, unless the
      // database fallback is on), and every added check passes.
      const report = await readinessReport({
        redis: async () => {
          try {
            await redis.ping();
          } catch (err) {
            if (!dbFallback) throw new Error(redisProblem(err, config.redisUrl, config.redisClusterNodes));
          }
        },
        ...overrides.readiness,
      });
      sendJson(res, report.ready ? 200 : 503, {
        status: report.ready ? 'ready' : 'not ready',
        checks: { ...report.checks, dbFallback },
      });
      return;
    }
    if (path === '/metrics' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': metrics.contentType });
      res.end(await metrics.metrics());
      return;
    }
    if (extension.handle && (await extension.handle(req, res))) return;
    if (overrides.index && path === '/' && req.method === 'GET') {
      // A first visit should say what this server is and where to go next, not "not found".
      sendJson(res, 200, {
        service: 'unread-sync socket server',
        socketio: `connect with auth { token: <Supabase JWT> }; events: ${TOTAL_EVENT}, ${ROOMS_EVENT}, ${COUNTS_EVENT}`,
        endpoints: {
          readyz: '/readyz',
          healthz: '/healthz',
          metrics: '/metrics',
          demo: config.demo ? '/demo' : 'run `unread-sync demo` for the demo page',
        },
      });
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  }

  const io = new Server(http, {
    serveClient: true,
    // Badge events carry a user id at most: a 1 MB default would let one socket make the server
    // hold megabytes per message.
    maxHttpBufferSize: 16 * 1024,
    ...(config.corsOrigins.length > 0 ? { cors: { origin: config.corsOrigins } } : {}),
  });
  const badges = attachUnreadBadges(io, {
    redis,
    keyPrefix: config.keyPrefix,
    auth: { jwtSecret: config.jwtSecret, jwksUrl: config.jwksUrl, audience: config.jwtAudience },
    log,
    hydrateTimeoutMs: config.hydrateTimeoutMs,
    coalesceMs: config.coalesceMs,
    reconcileIntervalMs: config.reconcileIntervalMs,
    fallback: overrides.fallback,
  });
  const metrics = socketMetrics(io, badges);
  if (overrides.extend) extension = overrides.extend(badges);

  const release = async () => {
    await badges.close();
    await new Promise<void>((resolve) => io.close(() => resolve()));
    await extension.close?.();
    if (!overrides.redis) redis.disconnect();
  };
  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(config.port, config.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await release(); // e.g. the port is taken: leave nothing open that keeps the process alive
    throw err;
  }
  const port = (http.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  log.info({ url, demo: config.demo }, 'socket server listening');

  return {
    url,
    port,
    http,
    io,
    badges,
    close: release,
  };
}
