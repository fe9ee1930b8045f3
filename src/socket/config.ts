import { ConfigError, readSettings, type ScopedConfig } from '../config.js';

// Socket-server settings are the table's `socket` and `both` rows (src/config.ts): a socket
// process needs no DB credentials (DATABASE_URL is read only for the demo endpoints and the fallback).

export interface SocketConfig extends ScopedConfig<'socket'> {}

/** Reads and validates the socket server's environment; throws ConfigError naming every bad variable. */
export function loadSocketConfig(env: Record<string, string | undefined> = process.env): SocketConfig {
  const c = readSettings('socket', env);
  const issues: string[] = [];
  if (!c.jwtSecret && !c.jwksUrl) {
    issues.push('SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL must be set (sockets authenticate with Supabase JWTs)');
  }
  if (c.demo && !c.jwtSecret) issues.push('UNREAD_DEMO=true needs SUPABASE_JWT_SECRET (to mint demo tokens)');
  if (c.dbFallback && !c.databaseUrl) issues.push('UNREAD_DB_FALLBACK=true needs DATABASE_URL (the fallback reads chat_rooms)');
  if (c.demo && !c.databaseUrl) issues.push('UNREAD_DEMO=true needs DATABASE_URL (demo endpoints write chat_rooms)');
  if (issues.length > 0) throw new ConfigError(issues);
  return c;
}
