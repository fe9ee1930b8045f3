/**
 * Reads `exp` / `iat` from a JWT without verifying it (the server verifies; the client only needs
 * to know when to fetch a new one). Hand-written base64url because `atob`/`Buffer` are not on
 * every runtime this client targets (older React Native engines lack `atob`).
 */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function base64UrlToBinary(input: string): string | null {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const ch of input.replace(/=+$/, '')) {
    const v = ALPHABET.indexOf(ch === '+' ? '-' : ch === '/' ? '_' : ch);
    if (v < 0) return null;
    value = (value << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  return out;
}

export interface TokenTimes {
  /** Seconds since the epoch. */
  exp?: number | undefined;
  iat?: number | undefined;
}

export function decodeTokenTimes(token: string): TokenTimes | null {
  const part = token.split('.')[1];
  if (!part) return null;
  const json = base64UrlToBinary(part);
  if (json === null) return null;
  try {
    // Non-ASCII claims decode as Latin-1 here; that keeps the JSON valid and exp/iat are numbers.
    const claims = JSON.parse(json) as Record<string, unknown>;
    const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
    return { exp: num(claims.exp), iat: num(claims.iat) };
  } catch {
    return null;
  }
}

/**
 * Milliseconds until the token should be replaced, or null when it never expires. Refreshes
 * `beforeMs` ahead of `exp`, but never later than half-way through a short lifetime, and never
 * sooner than a floor (a client clock far ahead of the server's must not cause a refresh loop).
 */
export function refreshDelayMs(token: string, beforeMs: number, now = Date.now()): number | null {
  const t = decodeTokenTimes(token);
  if (!t || t.exp === undefined) return null;
  const remaining = t.exp * 1000 - now;
  const lifetime = t.iat !== undefined && t.iat < t.exp ? (t.exp - t.iat) * 1000 : Math.max(remaining, 0);
  const floor = Math.min(5_000, lifetime / 2);
  return Math.max(floor, Math.min(remaining, lifetime) - Math.min(beforeMs, lifetime / 2));
}
