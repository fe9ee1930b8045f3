import { useCallback, useSyncExternalStore } from 'react';
import type { UnreadBadgesClient, UnreadListener, UnreadState } from '../client/types.js';

const EMPTY: UnreadState = Object.freeze({ total: 0, unreadRooms: 0, rooms: Object.freeze({}), seq: 0, ready: false });
const noClient = () => () => {};

/**
 * The client's current state, re-rendering on every change. Pass the client from
 * `connectUnreadBadges` (create it once, e.g. in a context or `useMemo`, and close it on sign-out);
 * with no client yet it returns an empty, not-ready state.
 */
export function useUnreadBadges(client: UnreadBadgesClient | null | undefined): UnreadState {
  const subscribe = useCallback(
    (onChange: () => void) => {
      if (!client) return noClient();
      const listener: UnreadListener = () => onChange();
      return client.subscribe(listener);
    },
    [client],
  );
  const get = useCallback(() => (client ? client.getState() : EMPTY), [client]);
  return useSyncExternalStore(subscribe, get, get);
}

/** One room's unread count (0 when the room has none). */
export function useRoomUnread(client: UnreadBadgesClient | null | undefined, roomId: string): number {
  return useUnreadBadges(client).rooms[roomId] ?? 0;
}

export type { UnreadBadgesClient, UnreadState };
