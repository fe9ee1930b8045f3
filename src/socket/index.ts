// Socket layer of unread-sync: badges over Socket.IO, the seed-compatible adapter and the demo.
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
  SeedCompatChatSocket,
  RoomNotFoundError,
  InvalidInputError,
  MAX_MARK_UNREAD,
  type SeedCompatOptions,
  type WriteResult,
  type MarkAllResult,
  type SqlClient,
} from '../compat/seed-compat.js';
export { startSocketServer, type RunningSocketServer } from './server.js';
export { seedDemo, DEMO_USERS, DEMO_ROOMS, type DemoUser, type DemoRoom } from '../demo/demo.js';
export { startDemo, type RunningDemo } from '../launch.js';
