import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import { connect, type Sql } from '../db.js';
import { redactSecrets } from '../env.js';
import type { Logger } from '../log.js';
import { readinessReport, type Check } from '../ops.js';
import { redisProblem } from '../problems.js';
import { createRedis, type RedisClient } from '../store/store.js';
import { DbFallback } from '../read/fallback.js';
import { attachUnreadBadges, COUNTS_EVENT, ROOMS_EVENT, TOTAL_EVENT, type UnreadBadges } from './badges.js';
import type { SocketConfig } from './config.js';
import { handleDemoRequest, sendJson } from '../demo/demo.js';
import { socketMetrics } from './metrics.js';
import { SeedCompatChatSocket } from '../compat/seed-compat.js';

export interface RunningSocketServer {
  /** Base URL clients connect to, e.g. http://127.0.0.1:3000 */
  url: string;
  port: number;
  http: HttpServer;
  io: Server;
  badges: UnreadBadges;
  /** Present in demo mode only. */
  chat: SeedCompatChatSocket | null;
  close(): Promise<void>;
}

/**
 * Standalone HTTP + Socket.IO server (`unread-sync serve`): badges over Socket.IO, /healthz,
 * and in demo mode the demo page with its endpoints. Resolves once listening.
 */
export async function startSocketServer(
  config: SocketConfig,
  log: Logger,
  overrides: {
    redis?: RedisClient;
    sql?: Sql;
    /** More /readyz checks (e.g. the bridge's when both run in one process). */
    readiness?: Record<string, Check>;
    /** Answer `/` with what this server is and its endpoints (`start`, for a first visit). */
    index?: boolean;
  } = {},
): Promise<RunningSocketServer> {
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
  const sql = config.demo ? (overrides.sql ?? connect(config.databaseUrl as string, { max: 4, applicationName: 'unread-sync demo' })) : null;
  let chat: SeedCompatChatSocket | null = null;
  const fallbackSql = config.dbFallback
    ? connect(config.databaseUrl as string, { max: config.dbFallbackMaxConcurrent, applicationName: 'unread-sync fallback' })
    : null;

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
            if (!config.dbFallback) throw new Error(redisProblem(err, config.redisUrl, config.redisClusterNodes));
          }
        },
        ...overrides.readiness,
      });
      sendJson(res, report.ready ? 200 : 503, {
        status: report.ready ? 'ready' : 'not ready',
        checks: { ...report.checks, dbFallback: config.dbFallback },
      });
      return;
    }
    if (path === '/metrics' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': metrics.contentType });
      res.end(await metrics.metrics());
      return;
    }
    if (chat && config.jwtSecret) {
      if (await handleDemoRequest(req, res, { jwtSecret: config.jwtSecret, audience: config.jwtAudience, chat })) return;
    }
    if (overrides.index && path === '/' && req.method === 'GET') {
      // A first visit should say what this server is and where to go next, not "not found".
      sendJson(res, 200, {
        service: 'unread-sync socket server',
        socketio: `connect with auth { token: <Supabase JWT> }; events: ${TOTAL_EVENT}, ${ROOMS_EVENT}, ${COUNTS_EVENT}`,
        endpoints: { readyz: '/readyz', healthz: '/healthz', metrics: '/metrics', demo: config.demo ? '/demo' : 'run `unread-sync demo` for the demo page' },
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
    fallback: fallbackSql ? new DbFallback(fallbackSql, { maxConcurrent: config.dbFallbackMaxConcurrent }) : undefined,
  });
  const metrics = socketMetrics(io, badges);
  if (sql) {
    chat = new SeedCompatChatSocket(sql, badges, { log });
    log.warn('demo mode: /demo endpoints mint tokens for demo users and write chat_rooms; never enable in production');
  }

  const release = async () => {
    await badges.close();
    await new Promise<void>((resolve) => io.close(() => resolve()));
    if (sql && !overrides.sql) await sql.end({ timeout: 5 });
    await fallbackSql?.end({ timeout: 5 });
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
    chat,
    close: release,
  };
}
