import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs on stderr; connection strings and tokens are redacted wherever they appear as fields. */
export function createLogger(level: string, name = 'unread-sync'): Logger {
  return pino(
    {
      name,
      level,
      redact: { paths: ['databaseUrl', 'redisUrl', 'token', 'authorization', '*.token', '*.password'], censor: '[redacted]' },
    },
    pino.destination(2),
  );
}
