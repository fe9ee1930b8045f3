import { describe, expect, it } from 'vitest';
import { PrefixOwnedError } from '../src/bridge/bridge.js';
import { ErrorCode, UnreadSyncError, hasCode } from '../src/errors.js';
import { InvalidIdError, parseUserId } from '../src/ids.js';
import { MigrationLockError } from '../src/migrate.js';
import { postgresProblem, redisProblem, NOT_MIGRATED } from '../src/problems.js';
import { snapshotStamp } from '../src/store/store.js';

// Service-free: errors raised on purpose carry a stable code, keep their class names and messages,
// and failures are classified by code where one exists.
describe('error model', () => {
  it('classes are UnreadSyncErrors with their codes and names', () => {
    const cases: Array<[Error, ErrorCode, string]> = [
      [new PrefixOwnedError('other'), ErrorCode.PREFIX_OWNED, 'PrefixOwnedError'],
      [new InvalidIdError('user id', 'x'), ErrorCode.INVALID_ID, 'InvalidIdError'],
      [new MigrationLockError(3, 1000), ErrorCode.MIGRATION_LOCKED, 'MigrationLockError'],
    ];
    for (const [err, code, name] of cases) {
      expect(err).toBeInstanceOf(UnreadSyncError);
      expect(hasCode(err, code)).toBe(true);
      expect(err.name).toBe(name);
    }
    expect(new PrefixOwnedError('b1').message).toContain('owned by bridge "b1"');
    expect(() => parseUserId('nope')).toThrow(/user id must be a UUID, got "nope"/);
    expect(() => snapshotStamp('x')).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_INPUT }));
  });

  const unreachable = 'Redis at 127.0.0.1:6379 is unreachable (check REDIS_URL, and that Redis runs)';
  const url = 'redis://:secret@127.0.0.1:6379';

  it('redisProblem: unreachable by socket code, by ioredis error type, or by text where no code exists', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    const maxRetries = Object.assign(new Error('Reached the max retries per request limit (which is 3).'), {
      name: 'MaxRetriesPerRequestError',
    });
    for (const err of [
      refused,
      maxRetries,
      new Error('Connection is closed.'),
      new Error('timed out'),
      new Error('PING timed out after 1500 ms'),
    ]) {
      expect(redisProblem(err, url)).toBe(unreachable);
    }
    const other = redisProblem(new Error('NOAUTH Authentication required.'), url);
    expect(other).toBe('Redis at 127.0.0.1:6379: NOAUTH Authentication required.');
  });

  it('postgresProblem: unreachable by code, not migrated by SQLSTATE 42P01 on unread_sync', () => {
    const pg = 'postgres://u:secret@127.0.0.1:5432/db';
    expect(postgresProblem(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), pg)).toMatch(/is unreachable/);
    expect(postgresProblem(Object.assign(new Error('x'), { code: '57P03' }), pg)).toMatch(/is unreachable/);
    const missing = Object.assign(new Error('relation "unread_sync.bridge_state" does not exist'), { code: '42P01' });
    expect(postgresProblem(missing, pg)).toBe(NOT_MIGRATED);
  });
});
