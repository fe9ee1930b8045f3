import { pino, type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { secretScrubber } from './env.js';

export type { Logger };

/**
 * Logs on stderr: readable lines on a terminal, JSON lines otherwise (for log shippers).
 * Connection strings and tokens are redacted as fields, and every line is scrubbed of URL
 * passwords and secret values, so an error message quoting a URL cannot leak one.
 */
export function createLogger(level: string, name = 'unread-sync', options: { pretty?: boolean } = {}): Logger {
  const usePretty = options.pretty ?? (process.stderr.isTTY === true && process.env.UNREAD_LOG_FORMAT !== 'json');
  const destination: DestinationStream = usePretty
    ? pretty({ destination: 2, colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname', sync: true })
    : pino.destination(2);
  const scrub = secretScrubber();
  return pino(
    {
      name,
      level,
      redact: { paths: ['databaseUrl', 'redisUrl', 'token', 'authorization', '*.token', '*.password'], censor: '[redacted]' },
      hooks: { streamWrite: scrub },
    },
    destination,
  );
}
