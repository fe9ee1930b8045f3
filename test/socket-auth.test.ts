import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, mintToken, tokenFromHandshake } from '../src/socket/auth.js';
import { uuid } from './support/env.js';

let jwksServer: Server;
let jwksUrl: string;
let privateKey: CryptoKey;

beforeAll(async () => {
  const pair = await generateKeyPair('ES256');
  privateKey = pair.privateKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  jwksServer = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', () => r()));
  jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/auth/v1/.well-known/jwks.json`;
});

afterAll(() => new Promise<void>((r) => jwksServer.close(() => r())));

const es256 = (sub: string, exp = '5m') =>
  new SignJWT({ role: 'authenticated' })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setSubject(sub)
    .setAudience('authenticated')
    .setExpirationTime(exp)
    .sign(privateKey);

describe('token verification', () => {
  it('accepts JWKS-signed (asymmetric) Supabase tokens', async () => {
    const verify = createTokenVerifier({ jwksUrl, audience: 'authenticated' });
    const id = uuid();
    expect(await verify(await es256(id.toUpperCase()))).toMatchObject({ userId: id });
  });

  it('refuses HS256 tokens when only JWKS is configured, and wrong audiences', async () => {
    const verify = createTokenVerifier({ jwksUrl, audience: 'authenticated' });
    await expect(verify(await mintToken('x'.repeat(40), uuid()))).rejects.toThrow(/HS256 is not accepted/);
    const both = createTokenVerifier({ jwksUrl, jwtSecret: 'y'.repeat(40), audience: 'authenticated' });
    await expect(both(await mintToken('y'.repeat(40), uuid(), { audience: 'anon' }))).rejects.toThrow(/aud/);
    await expect(both(await es256(uuid(), '-1m'))).rejects.toThrow(/expired/);
  });

  it('reads the token from auth.token or the Authorization header', () => {
    expect(tokenFromHandshake({ auth: { token: 'Bearer abc' }, headers: {} })).toBe('abc');
    expect(tokenFromHandshake({ auth: {}, headers: { authorization: 'Bearer def' } })).toBe('def');
    expect(tokenFromHandshake({ auth: {}, headers: { authorization: 'Basic zzz' } })).toBeNull();
  });
});
