/**
 * Fault injection for the Realtime stand-in: what a flaky network or server does to broadcasts
 * (drop, duplicate, reorder, delay), socket outages, channel crashes and silent replication
 * restarts. Replies and heartbeats never go through here: only broadcasts are at risk.
 */
import { WebSocket } from 'ws';

export interface RealtimeServerFaults {
  /**
   * Abruptly terminate every websocket and refuse (HTTP 503) new upgrades for `ms`.
   * Resolves when the outage window ends.
   */
  dropConnections(ms: number): Promise<void>;
  /** Probability 0..1 that a message to one subscriber is silently dropped. */
  dropRate: number;
  /** Probability 0..1 that a message to one subscriber is sent twice. */
  duplicateRate: number;
  /** Hold up to N messages per socket and flush them shuffled (0/1 = off). */
  reorderWindow: number;
  /** A partially filled reorder window is flushed after this many ms (default 50). */
  reorderFlushMs: number;
  /** Extra delay before each message is written to the socket (default 0). */
  latencyMs: number;
  /** Push phx_error to matching joined channels (server-side channel crash); the client rejoins. Returns how many. */
  crashChannels(topic?: string): number;
  /** Silent replication slot restart: nothing committed in the next `ms` is streamed; channels are not told. */
  restartReplication(ms: number): void;
  /** Restore all knobs to their defaults. */
  reset(): void;
}

/** The knobs' values after reset(). */
export const FAULT_DEFAULTS = { dropRate: 0, duplicateRate: 0, reorderWindow: 0, reorderFlushMs: 50, latencyMs: 0 };

/** What the server does when a fault asks for it. */
export interface FaultTargets {
  /** Terminate every socket abruptly (no close frame, like a network cut) and refuse upgrades until `until` (ms epoch). */
  cutConnections(until: number): void;
  /** Accept upgrades again. */
  endRefusal(): void;
  crashChannels(topic?: string): number;
  restartReplication(ms: number): void;
}

export function createFaults(targets: FaultTargets): RealtimeServerFaults {
  const faults: RealtimeServerFaults = {
    ...FAULT_DEFAULTS,
    dropConnections(ms: number): Promise<void> {
      targets.cutConnections(Date.now() + ms);
      return new Promise((resolve) => setTimeout(resolve, ms));
    },
    crashChannels: (topic?: string): number => targets.crashChannels(topic),
    restartReplication: (ms: number): void => targets.restartReplication(ms),
    reset(): void {
      Object.assign(faults, FAULT_DEFAULTS);
      targets.endRefusal();
    },
  };
  return faults;
}

/** A socket as the broadcast path sees it: frames held back for reordering live on it. */
export interface FaultySocket {
  ws: WebSocket;
  held: Array<string | Buffer>;
  heldTimer: NodeJS.Timeout | null;
}

/** The counters the broadcast path keeps (a subset of the server's stats, mutated in place). */
export interface BroadcastStats {
  delivered: number;
  dropped: number;
  duplicated: number;
  undeliverable: number;
}

/** Writes broadcast frames through the faults' current knobs. */
export function createBroadcastOutput(faults: RealtimeServerFaults, random: () => number, stats: BroadcastStats) {
  function writeBroadcast(conn: FaultySocket, frame: string | Buffer): void {
    if (conn.ws.readyState !== WebSocket.OPEN) {
      stats.undeliverable++;
      return;
    }
    conn.ws.send(frame, { binary: typeof frame !== 'string' });
    stats.delivered++;
  }

  function transmit(conn: FaultySocket, frame: string | Buffer): void {
    if (faults.latencyMs > 0) setTimeout(() => writeBroadcast(conn, frame), faults.latencyMs);
    else writeBroadcast(conn, frame);
  }

  function flushHeld(conn: FaultySocket): void {
    if (conn.heldTimer) clearTimeout(conn.heldTimer);
    conn.heldTimer = null;
    const frames = conn.held;
    conn.held = [];
    for (let i = frames.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      const a = frames[i];
      const b = frames[j];
      if (a !== undefined && b !== undefined) {
        frames[i] = b;
        frames[j] = a;
      }
    }
    for (const f of frames) transmit(conn, f);
  }

  /** Every broadcast frame to a subscriber's socket goes through here so faults apply uniformly. */
  function send(conn: FaultySocket, frame: string | Buffer): void {
    if (faults.dropRate > 0 && random() < faults.dropRate) {
      stats.dropped++;
      return;
    }
    let copies = 1;
    if (faults.duplicateRate > 0 && random() < faults.duplicateRate) {
      copies = 2;
      stats.duplicated++;
    }
    for (let i = 0; i < copies; i++) {
      if (faults.reorderWindow > 1) {
        conn.held.push(frame);
        if (conn.held.length >= faults.reorderWindow) flushHeld(conn);
        else if (!conn.heldTimer) conn.heldTimer = setTimeout(() => flushHeld(conn), faults.reorderFlushMs);
      } else {
        transmit(conn, frame);
      }
    }
  }

  return { send };
}
