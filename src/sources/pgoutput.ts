/**
 * The few parts of the streaming replication protocol and of pgoutput (protocol version 1) the
 * logical source needs: transaction boundaries, which relation an insert went to, keepalives,
 * and the standby status update that lets the server free WAL behind the slot.
 * https://www.postgresql.org/docs/current/protocol-replication.html
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: bigint; xid: number }
  | { tag: 'commit'; commitLsn: bigint; endLsn: bigint }
  | { tag: 'relation'; relationId: number; schema: string; table: string }
  | { tag: 'insert'; relationId: number }
  | { tag: 'other'; code: string };

export type CopyMessage =
  /** XLogData: `end` is the server's WAL end when it sent the message. */
  | { type: 'xlog'; start: bigint; end: bigint; message: PgoutputMessage }
  | { type: 'keepalive'; end: bigint; replyRequested: boolean }
  | { type: 'unknown'; code: number };

/** Decodes one CopyData payload of a START_REPLICATION ... LOGICAL stream. */
export function parseCopyData(buf: Buffer): CopyMessage {
  const code = buf[0];
  if (code === 0x77 /* w */ && buf.length >= 25) {
    return { type: 'xlog', start: buf.readBigUInt64BE(1), end: buf.readBigUInt64BE(9), message: decodePgoutput(buf.subarray(25)) };
  }
  if (code === 0x6b /* k */ && buf.length >= 18) {
    return { type: 'keepalive', end: buf.readBigUInt64BE(1), replyRequested: buf[17] === 1 };
  }
  return { type: 'unknown', code: code ?? -1 };
}

/** Decodes the pgoutput messages the wake-up path looks at; every other one is 'other'. */
export function decodePgoutput(x: Buffer): PgoutputMessage {
  const code = String.fromCharCode(x[0] ?? 0);
  switch (code) {
    case 'B': // Begin: final LSN (8), commit timestamp (8), xid (4)
      return { tag: 'begin', finalLsn: x.readBigUInt64BE(1), xid: x.readUInt32BE(17) };
    case 'C': // Commit: flags (1), commit LSN (8), end LSN (8), timestamp (8)
      return { tag: 'commit', commitLsn: x.readBigUInt64BE(2), endLsn: x.readBigUInt64BE(10) };
    case 'R': {
      // Relation: id (4), namespace (cstring), name (cstring), ...
      const relationId = x.readUInt32BE(1);
      const nsEnd = x.indexOf(0, 5);
      const nameEnd = x.indexOf(0, nsEnd + 1);
      return {
        tag: 'relation',
        relationId,
        schema: x.toString('utf8', 5, nsEnd) || 'pg_catalog',
        table: x.toString('utf8', nsEnd + 1, nameEnd),
      };
    }
    case 'I': // Insert: relation id (4), 'N', tuple
      return { tag: 'insert', relationId: x.readUInt32BE(1) };
    default:
      return { tag: 'other', code };
  }
}

const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

/**
 * Standby status update ('r'): written, flushed and applied up to `lsn`. The stream is only a
 * wake-up (the log is the record), so everything received counts as flushed: the slot never
 * holds WAL back for the bridge. `replyRequested` asks the server for a keepalive at once (how a
 * stalled stream is noticed).
 */
export function statusUpdate(lsn: bigint, replyRequested: boolean, now = Date.now()): Buffer {
  const out = Buffer.alloc(34);
  out[0] = 0x72; // r
  out.writeBigUInt64BE(lsn, 1);
  out.writeBigUInt64BE(lsn, 9);
  out.writeBigUInt64BE(lsn, 17);
  out.writeBigInt64BE(BigInt(now - PG_EPOCH_MS) * 1000n, 25);
  out[33] = replyRequested ? 1 : 0;
  return out;
}

/** "16/B374D848" -> bigint. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
