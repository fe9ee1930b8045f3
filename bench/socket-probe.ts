import { randomBytes } from 'node:crypto';
import { io as connectClient, type Socket } from 'socket.io-client';
import type { BenchContext } from './context.js';

/**
 * Scenario 2(b): the real socket layer (src/socket, startSocketServer) in this process, plus one
 * Socket.IO client per target user that reports each `total-unread-count-updated` it receives.
 */
export interface SocketProbe {
  connect(userIds: string[], onTotal: (userId: string, total: number) => void): Promise<void>;
  close(): Promise<void>;
}

export async function loadSocketProbe(ctx: BenchContext): Promise<{ probe: SocketProbe | null; reason: string }> {
  let mod: typeof import('../src/socket/index.js');
  try {
    mod = await import('../src/socket/index.js');
  } catch (err) {
    return { probe: null, reason: `src/socket/index.ts could not be loaded: ${(err as Error).message}` };
  }
  if (typeof mod.startSocketServer !== 'function') return { probe: null, reason: 'src/socket/index.ts does not export startSocketServer' };
  const { startSocketServer, loadSocketConfig, mintToken, TOTAL_EVENT } = mod;
  const secret = randomBytes(32).toString('hex');
  const config = loadSocketConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: ctx.redisUrl,
    UNREAD_KEY_PREFIX: ctx.prefix,
    SUPABASE_JWT_SECRET: secret,
    LOG_LEVEL: 'warn',
    // Coalescing and reconcile stay at their defaults (50 ms / 5 s): what a deployment runs.
  });
  const server = await startSocketServer(config, ctx.log);
  const clients: Socket[] = [];
  return {
    reason: 'measured',
    probe: {
      async connect(userIds, onTotal) {
        for (let i = 0; i < userIds.length; i += 50) {
          await Promise.all(
            userIds.slice(i, i + 50).map(async (userId) => {
              const token = await mintToken(secret, userId, { expiresInSeconds: 3_600 });
              const socket = connectClient(server.url, { auth: { token }, transports: ['websocket'], reconnection: false });
              clients.push(socket);
              // The first event is the initial total sent on connect: wait for it before measuring.
              await new Promise<void>((resolve, reject) => {
                socket.once('connect_error', reject);
                socket.once(TOTAL_EVENT, () => resolve());
              });
              socket.on(TOTAL_EVENT, (p: { totalUnreadCount: number }) => onTotal(userId, p.totalUnreadCount));
            }),
          );
        }
      },
      async close() {
        for (const c of clients) c.disconnect();
        await server.close();
      },
    },
  };
}
