/**
 * Phoenix channels wire format as the Supabase Realtime server speaks it (RealtimeWeb.Socket.V2Serializer):
 * V1 JSON objects, V2 JSON arrays, and V2 binary frames for broadcasts. Pure functions, no I/O.
 */
import type { RawData } from 'ws';

export type Vsn = '1.0.0' | '2.0.0';
export type Json = Record<string, unknown>;

/** Decoded V2 binary "user broadcast push" (kind 3) sent by realtime-js for channel.send(). */
export interface UserBroadcastPush {
  kind: 'user_broadcast_push';
  event: string;
  encoding: 'json' | 'binary';
  body: Buffer;
}

export interface Inbound {
  joinRef: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: Json | UserBroadcastPush;
}

/** What gets fanned out: either a UserBroadcast (DB rows, binary pushes) or a plain map payload. */
export type OutBroadcast =
  | { kind: 'user'; event: string; encoding: 'json' | 'binary'; body: Buffer; meta: Json | null }
  | { kind: 'map'; payload: Json };

const KIND_PUSH = 0;
const KIND_USER_BROADCAST_PUSH = 3;
const KIND_USER_BROADCAST = 4;

export function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

export function isUserPush(p: Inbound['payload']): p is UserBroadcastPush {
  return p.kind === 'user_broadcast_push' && Buffer.isBuffer(p.body);
}

export function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

export function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** V2 binary frames: kind 0 (push) and kind 3 (user broadcast push), per RealtimeWeb.Socket.V2Serializer. */
export function decodeBinary(buf: Buffer): Inbound {
  const kind = buf.readUInt8(0);
  let off = 0;
  const take = (n: number): string => {
    const s = buf.toString('utf8', off, off + n);
    off += n;
    return s;
  };
  if (kind === KIND_USER_BROADCAST_PUSH) {
    const [joinRefLen, refLen, topicLen, eventLen, metaLen, enc] = [1, 2, 3, 4, 5, 6].map((i) => buf.readUInt8(i));
    off = 7;
    const joinRef = take(joinRefLen ?? 0);
    const ref = take(refLen ?? 0);
    const topic = take(topicLen ?? 0);
    const event = take(eventLen ?? 0);
    take(metaLen ?? 0); // client metadata: the real server ignores it too
    return {
      joinRef: joinRef || null,
      ref: ref || null,
      topic,
      event: 'broadcast',
      payload: { kind: 'user_broadcast_push', event, encoding: enc === 0 ? 'binary' : 'json', body: buf.subarray(off) },
    };
  }
  if (kind === KIND_PUSH) {
    const [joinRefLen, refLen, topicLen, eventLen] = [1, 2, 3, 4].map((i) => buf.readUInt8(i));
    off = 5;
    const joinRef = take(joinRefLen ?? 0);
    const ref = take(refLen ?? 0);
    const topic = take(topicLen ?? 0);
    const event = take(eventLen ?? 0);
    return { joinRef: joinRef || null, ref: ref || null, topic, event, payload: { binary: buf.subarray(off) } };
  }
  throw new Error(`unknown binary frame kind ${kind}`);
}

export function decodeText(vsn: Vsn, text: string): Inbound {
  const parsed: unknown = JSON.parse(text);
  if (vsn === '2.0.0') {
    if (!Array.isArray(parsed) || parsed.length < 5) throw new Error('expected V2 array');
    const [joinRef, ref, topic, event, payload] = parsed as unknown[];
    return {
      joinRef: str(joinRef),
      ref: str(ref),
      topic: str(topic) ?? '',
      event: str(event) ?? '',
      payload: isRecord(payload) ? payload : {},
    };
  }
  if (!isRecord(parsed)) throw new Error('expected V1 object');
  return {
    joinRef: str(parsed.join_ref),
    ref: str(parsed.ref),
    topic: str(parsed.topic) ?? '',
    event: str(parsed.event) ?? '',
    payload: isRecord(parsed.payload) ? parsed.payload : {},
  };
}

/** Phoenix messages/replies. V1 serializes only topic/event/payload/ref (no join_ref). */
export function encodeText(vsn: Vsn, joinRef: string | null, ref: string | null, topic: string, event: string, payload: unknown): string {
  if (vsn === '1.0.0') return JSON.stringify({ topic, event, payload, ref });
  return JSON.stringify([joinRef, ref, topic, event, payload]);
}

/** Encode a broadcast the way MessageDispatcher/V2Serializer do; null = not representable for this client. */
export function encodeBroadcast(vsn: Vsn, topic: string, msg: OutBroadcast): string | Buffer | null {
  if (msg.kind === 'map') return encodeText(vsn, null, null, topic, 'broadcast', msg.payload);
  if (vsn === '1.0.0') {
    // UserBroadcast.convert_to_json_broadcast: only JSON payloads survive for V1 clients
    if (msg.encoding !== 'json') return null;
    const payload: Json = { event: msg.event, payload: JSON.parse(msg.body.toString('utf8')) as unknown, type: 'broadcast' };
    if (msg.meta) payload.meta = msg.meta;
    return encodeText(vsn, null, null, topic, 'broadcast', payload);
  }
  const topicB = Buffer.from(topic, 'utf8');
  const eventB = Buffer.from(msg.event, 'utf8');
  const metaB = msg.meta ? Buffer.from(JSON.stringify(msg.meta), 'utf8') : Buffer.alloc(0);
  if (topicB.length > 255 || eventB.length > 255 || metaB.length > 255) return null;
  const header = Buffer.from([KIND_USER_BROADCAST, topicB.length, eventB.length, metaB.length, msg.encoding === 'json' ? 1 : 0]);
  return Buffer.concat([header, topicB, eventB, metaB, msg.body]);
}
