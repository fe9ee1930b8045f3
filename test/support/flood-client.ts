// Child-process entry: one authenticated socket that floods get-unread-counts as fast as its
// connection takes them, reconnecting when the server cuts it off. On SIGTERM it prints its
// counts as JSON and exits (the test pauses it with SIGSTOP/SIGCONT in between).
import { io, type Socket } from 'socket.io-client';

const url = process.env.FLOOD_URL as string;
const token = process.env.FLOOD_TOKEN as string;
let stopping = false;
const stats = { sent: 0, ok: 0, limited: 0, otherErrors: 0, disconnects: 0 };

function pump(s: Socket): void {
  if (!s.connected || stopping) return;
  // Keep the client's own write buffer short (backpressure), but never wait for answers.
  const engine = s.io.engine as unknown as { writeBuffer: unknown[] };
  if (engine.writeBuffer.length < 500) {
    for (let i = 0; i < 100; i++) {
      stats.sent++;
      s.emit('get-unread-counts', {}, (r: { error?: string }) => {
        if (!r.error) stats.ok++;
        else if (r.error.startsWith('rate limited')) stats.limited++;
        else stats.otherErrors++;
      });
    }
  }
  setImmediate(() => pump(s));
}

function connect(): void {
  if (stopping) return;
  const s = io(url, { transports: ['websocket'], auth: { token }, reconnection: false, forceNew: true });
  s.on('connect', () => pump(s));
  s.on('disconnect', () => {
    stats.disconnects++;
    setTimeout(connect, 20);
  });
  s.on('connect_error', () => setTimeout(connect, 50));
}

connect();
process.once('SIGTERM', () => {
  stopping = true;
  process.stdout.write(`${JSON.stringify(stats)}\n`, () => process.exit(0));
});
