// Child-process entry for the socket capacity bench: the real socket server (`unread-sync serve`:
// startSocketServer with the environment's config) plus an IPC channel the bench uses to read the
// process's own memory and CPU. Started with --expose-gc so heap figures are taken after a full GC.
import { getHeapStatistics } from 'node:v8';
import { createLogger } from '../src/log.js';
import { loadSocketConfig } from '../src/socket/config.js';
import { startSocketServer } from '../src/socket/server.js';

export interface ServerStats {
  /** Read by the bench from /proc/<pid>/status: process.memoryUsage() needs a descriptor, and at the open-files limit there is none. */
  rss: number;
  heapUsed: number;
  heapTotal: number;
  /** process.cpuUsage() in microseconds, and when it was read (ms, CLOCK_MONOTONIC). */
  cpuUserUs: number;
  cpuSystemUs: number;
  at: number;
  sockets: number;
  users: number;
  emits: number;
}

export type ServerMessage = { type: 'listening'; url: string; pid: number } | ({ type: 'stats' } & ServerStats);

const config = loadSocketConfig();
const server = await startSocketServer(config, createLogger(config.logLevel, 'unread-sync-socket-capacity'));
const gc = (globalThis as { gc?: () => void }).gc;

const send = (m: ServerMessage) => process.send?.(m);
process.on('message', (m: { type: string; gc?: boolean }) => {
  if (m.type !== 'stats') return;
  // Two passes: the first can leave weak/finalised objects for the second.
  if (m.gc !== false && gc) {
    gc();
    gc();
  }
  const heap = getHeapStatistics();
  const cpu = process.cpuUsage(); // getrusage: no descriptor needed
  send({
    type: 'stats',
    rss: NaN,
    heapUsed: heap.used_heap_size,
    heapTotal: heap.total_heap_size,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    at: Number(process.hrtime.bigint() / 1000n) / 1000,
    sockets: server.io.engine.clientsCount,
    users: server.badges.connectedUsers().length,
    emits: server.badges.emitCount(),
  });
});
const stop = () => {
  // Closing thousands of sockets can take a while; never outlive the bench by more than a moment.
  setTimeout(() => process.exit(0), 5_000).unref();
  void server.close().finally(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('disconnect', stop); // the bench died: do not linger holding sockets
send({ type: 'listening', url: server.url, pid: process.pid });
