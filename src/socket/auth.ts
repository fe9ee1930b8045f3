import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import { ErrorCode, UnreadSyncError } from '../errors.js';
import { InvalidIdError, parseUserId } from '../ids.js';

/** Refusal of a socket's credentials; `message` is safe to send to the client. */
export class AuthError extends UnreadSyncError {
  constructor(message: string) {
    super(ErrorCode.UNAUTHORIZED, message);
  }
}

export interface AuthOptions {
  /** Supabase project JWT secret (HS256). */
  jwtSecret?: string | undefined;
  /** Supabase JWKS endpoint (asymmetric signing keys), e.g. https://<ref>.supabase.co/auth/v1/.well-known/jwks.json */
  jwksUrl?: string | undefined;
  /** Expected `aud`; Supabase user tokens carry "authenticated". */
  audience?: string | undefined;
}

export interface VerifiedUser {
  userId: string;
  /** Epoch ms when the token stops being valid. */
  expiresAt: number;
}

export type TokenVerifier = (token: string) => Promise<VerifiedUser>;

// Asymmetric algorithms only for JWKS: an HS256 token must never be checked against a public key.
const ASYMMETRIC = ['ES256', 'ES384', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'];

/** Builds a verifier for Supabase access tokens: HS256 with the secret, or JWKS-signed. */
export function createTokenVerifier(options: AuthOptions): TokenVerifier {
  const secret = options.jwtSecret ? new TextEncoder().encode(options.jwtSecret) : null;
  const jwks = options.jwksUrl ? createRemoteJWKSet(new URL(options.jwksUrl)) : null;
  if (!secret && !jwks) throw new Error('createTokenVerifier needs jwtSecret or jwksUrl');
  const audience = options.audience;

  return async (token: string) => {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new AuthError('unauthorized: malformed token');
    }
    let payload: JWTPayload;
    try {
      const common = { requiredClaims: ['exp', 'sub'], ...(audience ? { audience } : {}) };
      if (alg === 'HS256' && secret) {
        ({ payload } = await jwtVerify(token, secret, { ...common, algorithms: ['HS256'] }));
      } else if (alg && ASYMMETRIC.includes(alg) && jwks) {
        ({ payload } = await jwtVerify(token, jwks, { ...common, algorithms: ASYMMETRIC }));
      } else {
        throw new AuthError(`unauthorized: token algorithm ${alg ?? 'none'} is not accepted`);
      }
    } catch (err) {
      throw toAuthError(err);
    }
    let userId: string;
    try {
      userId = parseUserId(payload.sub, 'token sub');
    } catch (err) {
      throw new AuthError(`unauthorized: ${err instanceof InvalidIdError ? err.message : 'invalid sub'}`);
    }
    return { userId, expiresAt: (payload.exp ?? 0) * 1000 };
  };
}

function toAuthError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof errors.JWTExpired) return new AuthError('unauthorized: token expired');
  if (err instanceof errors.JWSSignatureVerificationFailed) return new AuthError('unauthorized: invalid token signature');
  if (err instanceof errors.JWTClaimValidationFailed) return new AuthError(`unauthorized: token claim ${err.claim} ${err.reason}`);
  if (err instanceof errors.JWKSNoMatchingKey) return new AuthError('unauthorized: no signing key matches the token');
  if (err instanceof errors.JOSEError) return new AuthError(`unauthorized: invalid token (${err.code})`);
  // JWKS fetch failures and the like: not the client's fault, but still a refusal.
  return new AuthError('unauthorized: token could not be verified');
}

/** The bearer token of a handshake: `auth.token` first, then the Authorization header. */
export function tokenFromHandshake(handshake: {
  auth: Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}): string | null {
  const fromAuth = handshake.auth?.token;
  if (typeof fromAuth === 'string' && fromAuth.length > 0) return fromAuth.replace(/^Bearer\s+/i, '');
  const header = handshake.headers.authorization;
  const value = Array.isArray(header) ? header[0] : header;
  const m = value ? /^Bearer\s+(\S+)$/i.exec(value) : null;
  return m?.[1] ?? null;
}

/** Signs a Supabase-shaped HS256 access token (demo mode and tests only). */
export async function mintToken(
  secret: string,
  userId: string,
  options: { expiresInSeconds?: number; audience?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: 'authenticated' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(parseUserId(userId))
    .setAudience(options.audience ?? 'authenticated')
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresInSeconds ?? 300))
    .sign(new TextEncoder().encode(secret));
}
