// Child-process entry for the socket capacity bench: holds a share of the client sockets
// (socket.io-client, websocket transport only, one authenticated socket per user), all from one
// source address (127.0.0.x) so that each worker has its own ephemeral port range.
import { io as ioClient, type Socket } from 'socket.io-client';
import { mintToken } from '../src/socket/auth.js';
import { TOTAL_EVENT, type TotalUnreadPayload } from '../src/socket/badges.js';

export type WorkerRequest =
  | {
      type: 'connect';
      url: string;
      secret: string;
      /** Global index of users[0] (the bench numbers every user). */
      offset: number;
      users: string[];
      concurrency: number;
      timeoutMs: number;
      /** CLOCK_MONOTONIC ms after which no new connection is started (the machine is too slow to go on). */
      deadline: number;
    }
  | { type: 'record'; on: boolean }
  | { type: 'collect' }
  | { type: 'close' };

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'connected'; ok: number[]; failed: number; notTried: number; errors: Record<string, number>; ms: number; rss: number }
  | { type: 'samples'; idx: number[]; total: number[]; at: number[]; disconnects: number; rss: number }
  | { type: 'closed' };

const localAddress = process.env.CAPACITY_LOCAL_ADDRESS;
const sockets: Socket[] = [];
let recording = false;
let disconnects = 0;
// Every badge event received while recording: global user index, total, CLOCK_MONOTONIC ms.
let rec: { idx: number[]; total: number[]; at: number[] } = { idx: [], total: [], at: [] };
const clock = () => Number(process.hrtime.bigint() / 1000n) / 1000;
const send = (m: WorkerReply) => process.send?.(m);

async function connectOne(url: string, secret: string, userId: string, index: number, timeoutMs: number): Promise<void> {
  const token = await mintToken(secret, userId, { expiresInSeconds: 6 * 3600 });
  const socket = ioClient(url, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true, // one Manager (one TCP connection) per socket, as separate browsers would have
    timeout: timeoutMs,
    auth: { token },
    ...(localAddress ? { localAddress } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error('no badge within the timeout'));
    }, timeoutMs);
    // Counted as connected once the first badge arrives: authenticated, subscribed and read.
    socket.once(TOTAL_EVENT, () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('connect_error', (err: Error) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
  });
  socket.on(TOTAL_EVENT, (p: TotalUnreadPayload) => {
    if (!recording) return;
    rec.idx.push(index);
    rec.total.push(p.totalUnreadCount);
    rec.at.push(clock());
  });
  socket.on('disconnect', () => disconnects++);
  sockets.push(socket);
}

process.on('message', (m: WorkerRequest) => {
  if (m.type === 'connect') {
    const started = clock();
    const ok: number[] = [];
    const errors: Record<string, number> = {};
    let failed = 0;
    let next = 0;
    const lane = async () => {
      while (next < m.users.length && clock() < m.deadline) {
        const i = next++;
        try {
          await connectOne(m.url, m.secret, m.users[i] as string, m.offset + i, m.timeoutMs);
          ok.push(m.offset + i);
        } catch (err) {
          failed++;
          const key = (err as Error).message.slice(0, 80);
          errors[key] = (errors[key] ?? 0) + 1;
        }
      }
    };
    void Promise.all(Array.from({ length: Math.min(m.concurrency, m.users.length) }, lane)).then(() =>
      send({
        type: 'connected',
        ok,
        failed,
        notTried: m.users.length - Math.min(next, m.users.length),
        errors,
        ms: clock() - started,
        rss: process.memoryUsage().rss,
      }),
    );
  } else if (m.type === 'record') {
    recording = m.on;
  } else if (m.type === 'collect') {
    send({ type: 'samples', ...rec, disconnects, rss: process.memoryUsage().rss });
    rec = { idx: [], total: [], at: [] };
  } else if (m.type === 'close') {
    for (const s of sockets) s.close();
    sockets.length = 0;
    send({ type: 'closed' });
    setTimeout(() => process.exit(0), 100);
  }
});
process.once('disconnect', () => process.exit(0)); // the bench died: release the sockets
send({ type: 'ready' });
