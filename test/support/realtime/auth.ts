/**
 * Who may connect and join, as the Supabase Realtime server decides it: the socket's `apikey` and
 * channel access tokens are HS* JWTs (ChannelsAuthorization + JwtVerification), private channels
 * are authorized by RLS on realtime.messages (Tenants.Authorization: probe rows read back as the
 * JWT's role, then rolled back).
 */
import { randomUUID } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import postgres from 'postgres';
import type { Json } from './codec.js';

/** Mint a Supabase-style HS256 JWT (role + exp are what Realtime requires). */
export async function signTestJwt(
  jwtSecret: string,
  claims: { role: string; [claim: string]: unknown },
  expiresInSeconds = 3600,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'supabase', ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(now)
    .setExpirationTime(now + expiresInSeconds)
    .sign(new TextEncoder().encode(jwtSecret));
}

export interface Claims {
  role: string;
  exp: number;
  sub?: string;
  [claim: string]: unknown;
}

export type TokenResult = { ok: true; claims: Claims } | { ok: false; reason: TokenFailure; code: string; message: string };

export type TokenFailure = 'malformed' | 'signer' | 'expired' | 'signature' | 'missing_claims' | 'invalid';

export interface Policies {
  broadcastRead: boolean | null;
  presenceRead: boolean | null;
  broadcastWrite: boolean | null;
}

/** A join refused with the reason the real channel replies with. */
export class JoinRefused extends Error {}

/** Thrown inside sql.begin() to force a ROLLBACK while carrying a result out. */
class Rollback<T> extends Error {
  constructor(readonly value: T) {
    super('rollback');
  }
}

const HS_ALGS = ['HS256', 'HS384', 'HS512'];

function pgCode(err: unknown): string | undefined {
  return err instanceof postgres.PostgresError ? err.code : undefined;
}

/** UserSocket.connect: apikey must be a valid JWT or the upgrade is refused with 401 and this error. */
export const upgradeErrors: Record<TokenFailure, string> = {
  malformed: 'The token provided is not a valid JWT',
  signer: 'Failed to generate JWT signer, check your JWT secret or JWKS configuration',
  expired: 'Token has expired',
  signature: 'Failed to validate JWT signature',
  missing_claims: 'Fields `role` and `exp` are required in JWT',
  invalid: 'The token provided is not a valid JWT',
};

export interface AuthOptions {
  /** The server's own connection (a superuser, as the real server's connection effectively is). */
  sql: postgres.Sql;
  jwtSecret: string;
  log: (message: string, detail?: unknown) => void;
}

export function createAuth({ sql, jwtSecret, log }: AuthOptions) {
  const secretKey = new TextEncoder().encode(jwtSecret);

  // --- tokens (ChannelsAuthorization.authorize_conn + JwtVerification) ---------

  async function verifyToken(raw: string): Promise<TokenResult> {
    let token = raw;
    try {
      token = decodeURIComponent(raw);
    } catch {
      /* keep as-is */
    }
    token = token.replace(/\s/g, '');
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
      decodeJwt(token);
    } catch {
      return { ok: false, reason: 'malformed', code: 'MalformedJWT', message: 'The token provided is not a valid JWT' };
    }
    if (!alg || !HS_ALGS.includes(alg)) {
      return {
        ok: false,
        reason: 'signer',
        code: 'JwtSignerError',
        message: 'Failed to generate JWT signer, check your JWT secret or JWKS configuration',
      };
    }
    let payload: Json;
    try {
      payload = (await jwtVerify(token, secretKey, { algorithms: HS_ALGS })).payload as Json;
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        const exp = typeof err.payload.exp === 'number' ? err.payload.exp : 0;
        const ago = Math.floor(Date.now() / 1000) - exp;
        return { ok: false, reason: 'expired', code: 'InvalidJWTToken', message: `Token has expired ${ago} seconds ago` };
      }
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
        return { ok: false, reason: 'signature', code: 'JwtSignatureError', message: 'Failed to validate JWT signature' };
      }
      return { ok: false, reason: 'invalid', code: 'InvalidJWTToken', message: (err as Error).message };
    }
    if (typeof payload.role !== 'string' || typeof payload.exp !== 'number') {
      return { ok: false, reason: 'missing_claims', code: 'InvalidJWTToken', message: 'Fields `role` and `exp` are required in JWT' };
    }
    return { ok: true, claims: payload as Claims };
  }

  // --- RLS authorization (Tenants.Authorization) --------------------------------

  /** set_conn_config: what RLS policies on realtime.messages can read. */
  async function setConnConfig(tx: postgres.TransactionSql, subTopic: string, claims: Claims): Promise<void> {
    const sub = typeof claims.sub === 'string' ? claims.sub : '';
    await tx`
      select
        set_config('role', ${claims.role}, true),
        set_config('realtime.topic', ${subTopic}, true),
        set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
        set_config('request.jwt.claim.sub', ${sub}, true),
        set_config('request.jwt.claim.role', ${claims.role}, true),
        set_config('request.headers', '{}', true)`;
  }

  /** Maps authorization DB errors to the join error reasons the real channel returns. */
  function authorizationError(err: unknown, subTopic: string): JoinRefused {
    const code = pgCode(err);
    if (code === '23514') {
      return new JoinRefused('MissingPartition: Realtime was unable to find the expected messages partition');
    }
    if (code === '57014') return new JoinRefused(`QueryCanceled: ${(err as Error).message}`);
    if (code !== undefined) {
      log('RlsPolicyError', err);
      return new JoinRefused(`Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}`);
    }
    log('UnableToConnectToProject', err);
    return new JoinRefused('UnableToConnectToProject: Realtime was unable to connect to the project database');
  }

  /**
   * Read check exactly like get_read_policies_for_connection: in one transaction,
   * insert probe rows (as the server's own user) for topic+extension, switch to
   * the JWT role with its claims and realtime.topic, SELECT the probes back
   * through RLS, then ROLLBACK. A probe you can see = read permission.
   */
  async function readPolicies(subTopic: string, claims: Claims, presenceEnabled: boolean, prev: Policies | null): Promise<Policies> {
    const probes = new Map<string, string>([['broadcast', randomUUID()]]);
    if (presenceEnabled) probes.set('presence', randomUUID());
    try {
      await sql.begin(async (tx) => {
        for (const [extension, id] of probes) {
          await tx`
            insert into realtime.messages (id, topic, extension, inserted_at, updated_at)
            values (${id}::uuid, ${subTopic}, ${extension}, now() at time zone 'utc', now() at time zone 'utc')`;
        }
        await setConnConfig(tx, subTopic, claims);
        const rows = await tx`select id::text as id from realtime.messages where id::text in ${tx([...probes.values()])}`;
        throw new Rollback(new Set(rows.map((r) => String(r.id))));
      });
      throw new Error('unreachable');
    } catch (err) {
      if (!(err instanceof Rollback)) throw authorizationError(err, subTopic);
      const seen = err.value as Set<string>;
      const presenceId = probes.get('presence');
      return {
        broadcastRead: seen.has(probes.get('broadcast') ?? ''),
        presenceRead: presenceId ? seen.has(presenceId) : (prev?.presenceRead ?? null),
        broadcastWrite: null, // re-evaluated lazily with the new claims
      };
    }
  }

  /** Write check like check_write_policies: INSERT as the JWT role in a savepoint; 42501 = denied. Rolled back. */
  async function broadcastWritePolicy(sub: { subTopic: string; claims: Claims }): Promise<boolean> {
    try {
      await sql.begin(async (tx) => {
        await setConnConfig(tx, sub.subTopic, sub.claims);
        let allowed = true;
        try {
          await tx.savepoint(async (sp) => {
            await sp`
              insert into realtime.messages (topic, extension, inserted_at, updated_at)
              values (${sub.subTopic}, 'broadcast', now() at time zone 'utc', now() at time zone 'utc')`;
          });
        } catch (err) {
          if (pgCode(err) !== '42501') throw err;
          allowed = false;
        }
        throw new Rollback(allowed);
      });
      throw new Error('unreachable');
    } catch (err) {
      if (err instanceof Rollback) return err.value === true;
      log('broadcast write authorization failed', err);
      return false;
    }
  }

  return { verifyToken, readPolicies, broadcastWritePolicy };
}
