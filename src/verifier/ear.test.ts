/**
 * EAR results: the claims validate against schemas/ear.schema.json (written from
 * draft-ietf-rats-ear-00's CDDL) with ajv, the JWT decodes and verifies with jose through the
 * service's JWKS endpoint, its signature also verifies with Node's crypto alone (any JOSE
 * consumer), kid is the RFC 7638 thumbprint jose computes, and exp is honoured.
 */
import { createHash, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { calculateJwkThumbprint, createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { Verifier } from '../attest/verifier.js';
import { startVerifierService } from '../attest/service.js';
import { EAR_PROFILE, earClaims, trustClaimOf, verifyEar } from './ear.js';

const FIX = join(import.meta.dirname, '../../test/fixtures/attest/tpm2-tools-ecc-p256');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const schema = JSON.parse(readFileSync(join(import.meta.dirname, '../../schemas/ear.schema.json'), 'utf8'));
const validate = new Ajv({ strict: false }).compile(schema);

function verifier(extra: Record<string, unknown> = {}): Verifier {
  const dir = mkdtempSync(join(tmpdir(), 'he-ear-'));
  dirs.push(dir);
  return new Verifier({ stateDir: dir, policy: { schema: 'hyperenclave/verifier-policy', version: 1, checks: { 'ak.provenance': 'optional' }, ...extra } });
}
const quote = () => ({
  message: readFileSync(join(FIX, 'quote.msg')),
  signature: readFileSync(join(FIX, 'quote.sig')),
  pcrs: readFileSync(join(FIX, 'quote.pcrs')),
  akPem: readFileSync(join(FIX, 'ak.pem'), 'utf8'),
});
const nonce = Buffer.from(readFileSync(join(FIX, 'nonce.hex'), 'utf8').trim(), 'hex');

describe('EAR attestation results', () => {
  it('claims follow the draft: profile, iat, verifier-id, eat_nonce, submods with status, integer tiers and policy id', async () => {
    // the fixture's AK pinned by the policy (SHA-256 of its SPKI, computed here with Node crypto)
    const spki = createHash('sha256').update(createPublicKey(quote().akPem).export({ type: 'spki', format: 'der' })).digest('hex');
    const v = verifier({ resultTtlSeconds: 60, akProvenance: { trustedAkKeys: [spki] } });
    const out = v.verifyTpm2Tools(quote(), nonce);
    const jwt = await out.ear();
    const claims = decodeJwt(jwt);
    expect(validate(claims), JSON.stringify(validate.errors)).toBe(true);
    expect(claims.eat_profile).toBe('tag:github.com,2023:veraison/ear');
    expect(claims.eat_nonce).toBe(nonce.toString('base64url'));
    expect(claims.exp! - claims.iat!).toBe(60);
    const sub = (claims.submods as Record<string, Record<string, unknown>>).hyperenclave!;
    expect(sub['ear.status']).toBe(out.result['ear.status']);
    expect(sub['ear.appraisal-policy-id']).toMatch(/^urn:hyperenclave:policy:sha256:[0-9a-f]{64}$/);
    // AR4SI: the quote's identity checks passed (2: trustworthy instance)
    expect((sub['ear.trustworthiness-vector'] as Record<string, number>)['instance-identity']).toBe(2);
    const checks = sub['hyperenclave.checks'] as { name: string; claim: string }[];
    expect(checks.find((c) => c.name === 'signature')).toMatchObject({ status: 'pass', claim: 'instance-identity' });
    expect(checks.every((c) => c.claim === trustClaimOf(c.name))).toBe(true);
  });

  it('a forged quote is crypto-failed (99) and contraindicated; an AK nothing vouches for is unrecognized (97)', async () => {
    const q = quote();
    q.signature[q.signature.length - 1]! ^= 1;
    const bad = earClaims(verifier().verifyTpm2Tools(q, nonce).result);
    expect(bad.submods.hyperenclave!['ear.status']).toBe('contraindicated');
    expect(bad.submods.hyperenclave!['ear.trustworthiness-vector']!['instance-identity']).toBe(99);
    const strict = earClaims(verifier().verifyTpm2Tools(quote(), nonce).result);
    expect(strict.submods.hyperenclave!['ear.trustworthiness-vector']!['instance-identity']).toBe(97);
    expect(validate(bad)).toBe(true);
  });

  it('the JWT verifies with jose through the JWKS endpoint and with Node crypto alone; kid is the thumbprint; exp is honoured; tampering is caught', async () => {
    const v = verifier({ resultTtlSeconds: 60 });
    const svc = await startVerifierService({ verifier: v });
    try {
      const jwks = (await (await fetch(`${svc.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
      expect(jwks.keys).toHaveLength(1);
      const jwt = await v.verifyTpm2Tools(quote(), nonce).ear();
      const header = decodeProtectedHeader(jwt);
      expect(header).toMatchObject({ alg: 'ES256', typ: 'JWT' });
      expect(header.kid).toBe(await calculateJwkThumbprint(jwks.keys[0]!));
      const { payload } = await jwtVerify(jwt, createLocalJWKSet(jwks));
      expect(payload.eat_profile).toBe(EAR_PROFILE);
      // Independent of jose: ES256 = ECDSA P-256 SHA-256 over "header.payload", r||s
      const [h, p, s] = jwt.split('.') as [string, string, string];
      const pub = createPublicKey({ key: jwks.keys[0]! as never, format: 'jwk' });
      expect(nodeVerify('sha256', Buffer.from(`${h}.${p}`), { key: pub, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'))).toBe(true);
      const later = new Date((payload.iat! + 61) * 1000);
      await expect(verifyEar(jwt, jwks, { currentDate: later })).rejects.toThrow(/^EAR JWT: .*"exp" claim timestamp check failed/);
      const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, submods: { hyperenclave: { 'ear.status': 'affirming' } } })).toString('base64url')}.${s}`;
      await expect(verifyEar(forged, jwks)).rejects.toThrow(/signature verification failed/);
    } finally {
      await svc.close();
    }
  });
});
