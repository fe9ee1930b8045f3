/**
 * `unread-sync/client`: live unread badges for browsers, React Native and Node, on socket.io-client.
 * Nothing here may import a Node built-in: the module is bundled for browsers as is.
 */
export { connectUnreadBadges, type ConnectUnreadBadgesOptions } from './socket.js';
export { initialModel, reduce, hasGap, roomsBehind, roomsExact, type ClientEvent, type ClientModel } from './state.js';
export { decodeTokenTimes, refreshDelayMs } from './token.js';
export {
  TOTAL_EVENT,
  ROOMS_EVENT,
  COUNTS_EVENT,
  type RoomsUpdatedPayload,
  type TotalUnreadPayload,
  type UnreadCountsReply,
} from './protocol.js';
export type { UnreadBadgesClient, UnreadListener, UnreadState } from './types.js';
