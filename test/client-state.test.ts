import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasGap, initialModel, reduce, roomsExact, type ClientEvent, type ClientModel } from '../src/client/state.js';
import { decodeTokenTimes, refreshDelayMs } from '../src/client/token.js';
import { mintToken } from '../src/socket/auth.js';

/**
 * The client's ordering rule against a model of the server: a history of room changes gives Redis
 * states S_0..S_n (seq strictly increasing); the server emits coalesced deltas (diff against what it
 * last sent) and totals; every connection starts with a full state; get-unread-counts replies are
 * full states that may arrive late; connections overlap (token refresh) and deliver the same emit
 * twice; connections are cut short; a few deliveries are lost. Whatever the interleaving, the client never shows an older
 * total, every shown total is a real one, and it ends equal to the final Redis state.
 */

const ROOMS = ['r1', 'r2', 'r3', 'r4', 'r5'];

interface Snapshot {
  seq: number;
  rooms: Record<string, number>;
  total: number;
  unreadRooms: number;
}

function history(changes: Array<{ room: number; value: number; jump: number }>): Snapshot[] {
  const out: Snapshot[] = [{ seq: 1, rooms: {}, total: 0, unreadRooms: 0 }];
  for (const c of changes) {
    const prev = out.at(-1) as Snapshot;
    const rooms = { ...prev.rooms };
    const id = ROOMS[c.room] as string;
    if (c.value > 0) rooms[id] = c.value;
    else delete rooms[id];
    const values = Object.values(rooms);
    // A hydration restarts seq from the clock: a jump, never a step back.
    out.push({ seq: prev.seq + 1 + c.jump, rooms, total: values.reduce((a, b) => a + b, 0), unreadRooms: values.length });
  }
  return out;
}

const full = (s: Snapshot): ClientEvent => ({ type: 'full', seq: s.seq, total: s.total, unreadRooms: s.unreadRooms, rooms: s.rooms });
const totals = (s: Snapshot): ClientEvent => ({ type: 'totals', seq: s.seq, total: s.total, unreadRooms: s.unreadRooms });

/**
 * The contract's delta: every room whose count changed between base and s (the server diffs
 * versions, so a room that changed and came back is listed too), plus arbitrary unchanged extras.
 */
function delta(base: Snapshot, s: Snapshot, extra: string[], touched: (id: string) => boolean): ClientEvent {
  const rooms: Record<string, number> = {};
  for (const id of ROOMS) {
    if (touched(id) || extra.includes(id)) rooms[id] = s.rooms[id] ?? 0;
  }
  return { type: 'delta', seq: s.seq, baseSeq: base.seq, total: s.total, unreadRooms: s.unreadRooms, rooms };
}

const scenario = fc.record({
  changes: fc.array(fc.record({ room: fc.nat(ROOMS.length - 1), value: fc.nat(4), jump: fc.oneof(fc.constant(0), fc.nat(1000)) }), {
    minLength: 1,
    maxLength: 40,
  }),
  // Which states the server emits (coalescing); the last state is always emitted.
  emitMask: fc.array(fc.boolean(), { maxLength: 41 }),
  // Connections: where each starts (fraction of history) and where it is cut (the last one never is).
  connections: fc.array(fc.record({ start: fc.double({ min: 0, max: 1, noNaN: true }), cut: fc.double({ min: 0, max: 1, noNaN: true }) }), {
    minLength: 1,
    maxLength: 4,
  }),
  totalsFirst: fc.array(fc.boolean(), { maxLength: 41 }),
  extraRooms: fc.array(fc.subarray(ROOMS), { maxLength: 41 }),
  // Late get-unread-counts replies: state index (fraction) and delivery position (fraction).
  lateReplies: fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })), {
    maxLength: 3,
  }),
  duplicates: fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 10 }),
  // Lost deliveries (a server restart between emits, a bug anywhere): the next delta then shows a gap.
  drops: fc.array(fc.nat(), { maxLength: 2 }),
  seed: fc.array(fc.nat(), { minLength: 200, maxLength: 200 }),
});

type Scenario = typeof scenario extends fc.Arbitrary<infer T> ? T : never;

function streams(sc: Scenario, states: Snapshot[]): ClientEvent[][] {
  const n = states.length - 1;
  const emitted = states.map((_, i) => i === n || (sc.emitMask[i] ?? false));
  const lastEmitBefore = (i: number) => {
    for (let j = i - 1; j >= 0; j--) if (emitted[j]) return j;
    return 0;
  };
  return sc.connections.map((c, k) => {
    const last = k === sc.connections.length - 1;
    const start = Math.floor(c.start * n);
    const end = last ? n : start + Math.floor(c.cut * (n - start));
    // A dropped primary clears `ready` before its replacement connects (an overlapping refresh does not).
    const out: ClientEvent[] = k > 0 && c.cut < 0.3 ? [{ type: 'disconnected' }] : [];
    out.push(full(states[start] as Snapshot));
    for (let i = start + 1; i <= end; i++) {
      if (!emitted[i]) continue;
      const s = states[i] as Snapshot;
      const b = lastEmitBefore(i);
      const touched = (id: string) => sc.changes.slice(b, i).some((c) => ROOMS[c.room] === id);
      const d = delta(states[b] as Snapshot, s, sc.extraRooms[i] ?? [], touched);
      out.push(...(sc.totalsFirst[i] ? [totals(s), d] : [d, totals(s)]));
    }
    return out;
  });
}

/** Random interleaving that keeps each stream's order, driven by the scenario's seed. */
function interleave(parts: ClientEvent[][], seed: number[]): ClientEvent[] {
  const idx = parts.map(() => 0);
  const out: ClientEvent[] = [];
  let step = 0;
  for (;;) {
    const open = parts.map((_p, i) => i).filter((i) => (idx[i] as number) < (parts[i] as ClientEvent[]).length);
    if (open.length === 0) return out;
    const pick = open[(seed[step++ % seed.length] as number) % open.length] as number;
    out.push((parts[pick] as ClientEvent[])[(idx[pick] as number)++] as ClientEvent);
  }
}

describe('client reducer', () => {
  it('any interleaving of coalesced deltas, reconnects, late full states and duplicates ends equal to Redis', () => {
    let resyncs = 0;
    let runs = 0;
    fc.assert(
      fc.property(scenario, (sc) => {
        runs++;
        const states = history(sc.changes);
        const bySeq = new Map(states.map((s) => [s.seq, s]));
        const final = states.at(-1) as Snapshot;
        const events = interleave(streams(sc, states), sc.seed);
        for (const [at, pos] of sc.lateReplies) {
          const s = states[Math.floor(at * (states.length - 1))] as Snapshot;
          events.splice(Math.floor(pos * events.length), 0, full(s));
        }
        for (const d of sc.drops) {
          const i = d % Math.max(events.length, 1);
          if (events[i]?.type === 'delta') events.splice(i, 1);
        }
        for (const [from, to] of sc.duplicates) {
          if (events.length === 0) break;
          const dup = events[from % events.length] as ClientEvent;
          // Deliveries are duplicated, not the client's own disconnect notices.
          if (dup.type !== 'disconnected') events.splice(to % (events.length + 1), 0, dup);
        }

        let m: ClientModel = initialModel();
        let shownSeq = 0;
        for (const ev of events) {
          m = reduce(m, ev);
          const s = m.state;
          expect(s.seq).toBeGreaterThanOrEqual(shownSeq); // never an older total after a newer one
          shownSeq = s.seq;
          if (s.seq === 0) continue; // nothing received yet
          const real = bySeq.get(s.seq);
          expect(real, `shown seq ${s.seq} is a real state`).toBeDefined();
          expect([s.total, s.unreadRooms]).toEqual([real?.total, real?.unreadRooms]);
          if (roomsExact(m)) expect(s.rooms).toEqual(real?.rooms);
          expect(Object.isFrozen(s)).toBe(true);
        }
        // What the socket layer does when rooms trail or a gap was seen: ask for a full state.
        if (!roomsExact(m)) {
          resyncs++;
          m = reduce(m, full(final));
        }
        expect(m.state).toEqual({ total: final.total, unreadRooms: final.unreadRooms, rooms: final.rooms, seq: final.seq, ready: true });
        expect(roomsExact(m)).toBe(true);
      }),
      { numRuns: 1000 },
    );
    expect(runs).toBe(1000);
    // Both paths were exercised: most runs converge on events alone, some need the resync.
    expect(resyncs).toBeGreaterThan(0);
    expect(resyncs).toBeLessThan(runs);
  });

  it('duplicates are no-ops: the same object comes back', () => {
    const s = history([
      { room: 0, value: 2, jump: 0 },
      { room: 1, value: 1, jump: 0 },
    ]);
    let m = reduce(initialModel(), full(s[0] as Snapshot));
    const d = delta(s[0] as Snapshot, s[2] as Snapshot, [], (id) => id === 'r1' || id === 'r2');
    m = reduce(m, d);
    expect(reduce(m, d)).toBe(m);
    expect(reduce(m, totals(s[2] as Snapshot))).toBe(m);
    expect(reduce(m, totals(s[1] as Snapshot))).toBe(m);
    expect(m.state.rooms).toEqual({ r1: 2, r2: 1 });
  });

  it('a delta that skips over the rooms seq is a gap; its newer total still shows', () => {
    const s = history([
      { room: 0, value: 2, jump: 0 },
      { room: 1, value: 1, jump: 0 },
      { room: 0, value: 0, jump: 0 },
    ]);
    let m = reduce(initialModel(), full(s[0] as Snapshot));
    m = reduce(
      m,
      delta(s[1] as Snapshot, s[3] as Snapshot, [], (id) => id === 'r1' || id === 'r2'),
    );
    expect(hasGap(m)).toBe(true);
    expect(m.state.total).toBe(1);
    expect(m.state.rooms).toEqual({});
    m = reduce(m, full(s[3] as Snapshot));
    expect(hasGap(m)).toBe(false);
    expect(m.state.rooms).toEqual({ r2: 1 });
  });

  it('disconnect keeps the last state but clears ready', () => {
    const s = history([{ room: 2, value: 3, jump: 0 }]);
    const m = reduce(reduce(initialModel(), full(s[1] as Snapshot)), { type: 'disconnected' });
    expect(m.state).toMatchObject({ total: 3, rooms: { r3: 3 }, ready: false });
  });
});

describe('token expiry', () => {
  it('reads exp/iat without verifying and plans the refresh ahead of expiry', async () => {
    const token = await mintToken('x'.repeat(32), '0b7c2f4e-1d55-4f1e-9a63-0c1a1d3e5f00', { expiresInSeconds: 600 });
    const t = decodeTokenTimes(token);
    expect(t?.exp).toBeGreaterThan(Date.now() / 1000 + 590);
    const now = ((t?.iat as number) * 1000) as number;
    expect(refreshDelayMs(token, 60_000, now)).toBe(540_000);
    // A short token: half-way through.
    const short = await mintToken('x'.repeat(32), '0b7c2f4e-1d55-4f1e-9a63-0c1a1d3e5f00', { expiresInSeconds: 10 });
    expect(refreshDelayMs(short, 60_000, (decodeTokenTimes(short)?.iat as number) * 1000)).toBe(5_000);
    // A client clock far ahead: a floor, not a loop.
    expect(refreshDelayMs(token, 60_000, now + 3_600_000)).toBe(5_000);
    expect(decodeTokenTimes('not-a-jwt')).toBeNull();
    expect(refreshDelayMs('a.b.c', 1000)).toBeNull();
  });
});
