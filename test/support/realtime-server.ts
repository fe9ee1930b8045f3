/**
 * TEST-ONLY stand-in for the Supabase Realtime server (see realtime/server.ts for what it emulates
 * and what it leaves out). Split into realtime/codec.ts (Phoenix wire format), realtime/auth.ts
 * (JWTs and RLS checks), realtime/faults.ts (fault injection) and realtime/server.ts (wiring);
 * tests import from here.
 */
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
