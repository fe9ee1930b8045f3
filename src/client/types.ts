/** What a badge client shows: the total, the number of rooms with unread, and each room's count. */
export interface UnreadState {
  total: number;
  unreadRooms: number;
  /** Rooms with unread > 0 (a room absent here has 0). */
  rooms: Readonly<Record<string, number>>;
  /** Highest per-user seq applied; 0 before the first state. */
  seq: number;
  /** True once a full state has been received on the current connection. */
  ready: boolean;
}

export type UnreadListener = (state: UnreadState) => void;

export interface UnreadBadgesClient {
  getState(): UnreadState;
  /** Calls the listener with the current state at once and after every change; returns an unsubscribe. */
  subscribe(listener: UnreadListener): () => void;
  close(): void;
}
