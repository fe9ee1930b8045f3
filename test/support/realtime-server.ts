/**
 * TEST-ONLY stand-in for the Supabase Realtime server (see realtime/server.ts for what it emulates
 * and what it leaves out). Split into realtime/codec.ts (Phoenix wire format), realtime/auth.ts
 * (JWTs and RLS checks), realtime/faults.ts (fault injection) and realtime/server.ts (wiring);
 * tests import from here.
 */
import { migrate } from '../../src/migrate.js';
import { signTestJwt } from './realtime/auth.js';
import { applyRealtimeShim, type RealtimeServer, startRealtimeServer } from './realtime/server.js';

export {
  applyRealtimeShim,
  REAL_PROFILE,
  SHIM_SQL_PATH,
  startRealtimeServer,
  type QuotaOptions,
  type RealtimeServer,
  type RealtimeServerStats,
  type ReplicationOptions,
  type StartRealtimeServerOptions,
} from './realtime/server.js';
export { signTestJwt } from './realtime/auth.js';
export type { RealtimeServerFaults } from './realtime/faults.js';

/** A test database ready for the Supabase path: the Realtime stand-in's schema, then our migrations. */
export async function prepareRealtimeDb(databaseUrl: string): Promise<void> {
  await applyRealtimeShim(databaseUrl);
  await migrate({ databaseUrl, direction: 'up' });
}

/** prepareRealtimeDb, then a stand-in Realtime server on it and a service-role key for sources. */
export async function startRealtimeForDb(databaseUrl: string, jwtSecret: string): Promise<{ server: RealtimeServer; serviceKey: string }> {
  await prepareRealtimeDb(databaseUrl);
  const server = await startRealtimeServer({ databaseUrl, jwtSecret });
  return { server, serviceKey: await signTestJwt(jwtSecret, { role: 'service_role' }) };
}
