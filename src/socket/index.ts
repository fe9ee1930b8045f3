// Socket layer of unread-sync: badges over Socket.IO, read from Redis only. The database fallback,
// the seed-compatible adapter and the demo live above it (src/read, src/compat, src/demo) and are
// wired in by src/launch.ts.
export { loadSocketConfig, type SocketConfig } from './config.js';
export {
  AuthError,
  createTokenVerifier,
  mintToken,
  tokenFromHandshake,
  type AuthOptions,
  type TokenVerifier,
  type VerifiedUser,
} from './auth.js';
export {
  attachUnreadBadges,
  TOTAL_EVENT,
  COUNTS_EVENT,
  ROOMS_EVENT,
  roomsDelta,
  type RoomsUpdatedPayload,
  type AttachOptions,
  type UnreadBadges,
  type TotalUnreadPayload,
  type UnreadCountsReply,
  type ErrorReply,
} from './badges.js';
export {
  startSocketServer,
  type RunningSocketServer,
  type SocketServerExtension,
  type SocketServerOverrides,
} from './server.js';
export type { HttpRoute } from './http.js';
