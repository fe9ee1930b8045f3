// Child-process entry for multi-process socket tests: runs one socket server from the environment,
// prints {"url": ...} on stdout once listening, exits cleanly on SIGTERM.
import { createLogger } from '../../src/log.js';
import { loadSocketConfig } from '../../src/socket/config.js';
import { startSocketServer } from '../../src/socket/server.js';

const config = loadSocketConfig();
const server = await startSocketServer(config, createLogger(config.logLevel, 'unread-sync-socket-test'));
process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
process.once('SIGTERM', () => {
  void server.close().finally(() => process.exit(0));
});
