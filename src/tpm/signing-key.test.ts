import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { objectName } from './crypto.js';
import { TpmProtocolError, TpmUsageError } from './errors.js';
import { marshal } from './marshal.js';
import { marshalSignature, parseAttest, parseSignature } from './structures.js';
import { parsePublicArea, publicAreaName, signingKeyFrom } from './signing-key.js';
import { checkSignature, decodeAttest } from './verify.js';

const FIX = join(import.meta.dirname, '../../test/fixtures/attest');
const quote = (kind: string) => {
  const d = join(FIX, `tpm2-tools-${kind}`);
  return { message: readFileSync(join(d, 'quote.msg')), signature: readFileSync(join(d, 'quote.sig')), akPublic: readFileSync(join(d, 'ak.pub')) };
};

describe('signing keys from TPM public areas (AKs in evidence)', () => {
  it('TPM2B_PUBLIC and TPMT_PUBLIC give the same key; the Name is over the bytes as given', () => {
    const { akPublic } = quote('ecc-p256');
    const a = parsePublicArea(akPublic);
    const b = parsePublicArea(a.bytes);
    expect(b.bytes.equals(a.bytes)).toBe(true);
    expect(a.bytes.length === akPublic.length || a.bytes.length === akPublic.length - 2).toBe(true);
    expect(publicAreaName(a.bytes, a.public.nameAlg)).toEqual(objectName(a.public));
    const k = signingKeyFrom({ tpmtPublic: akPublic });
    expect(k).toMatchObject({ description: 'ecdsa P-256', hashName: 'sha256', name: objectName(a.public).toString('hex') });
    expect(signingKeyFrom({ tpmtPublic: akPublic })).toBe(k); // cached
  });

  it('refuses a PEM of another key, a non-key PEM, nothing at all, and a garbled area', () => {
    const p256 = quote('ecc-p256').akPublic;
    const otherPem = signingKeyFrom({ tpmtPublic: quote('ecc-p384').akPublic }).key.export({ type: 'spki', format: 'pem' }).toString();
    expect(() => signingKeyFrom({ tpmtPublic: p256, pem: otherPem })).toThrow(/different keys/);
    expect(() => signingKeyFrom({ pem: 'not a key' })).toThrow(TpmUsageError);
    expect(() => signingKeyFrom({})).toThrow(/public key missing/);
    expect(() => signingKeyFrom({ tpmtPublic: p256.subarray(0, 30) })).toThrow(TpmProtocolError);
  });

  it('SM2: the key from the public area verifies the quote swtpm made', () => {
    const q = quote('sm2');
    const k = signingKeyFrom({ tpmtPublic: q.akPublic });
    expect(k.description).toBe('sm2 SM2-P256');
    expect(checkSignature(k, q.message, q.signature)).toMatchObject({ ok: true, scheme: 'sm2' });
    // Given only as a PEM, the key lacks the public area an SM2 check needs: refused, not thrown.
    const pemOnly = signingKeyFrom({ pem: k.key.export({ type: 'spki', format: 'pem' }).toString() });
    expect(checkSignature(pemOnly, q.message, q.signature)).toMatchObject({ ok: false, reason: expect.stringMatching(/public area of an SM2-curve key/) });
  });
});

describe('checkSignature (never throws) and decodeAttest', () => {
  it('ECDSA r/s with a leading zero byte still verify; a flipped bit does not', () => {
    const q = quote('ecc-p256');
    const k = signingKeyFrom({ tpmtPublic: q.akPublic });
    expect(checkSignature(k, q.message, q.signature)).toEqual({ ok: true, scheme: 'ecdsa', hashName: 'sha256', reason: 'verifies' });
    const s = parseSignature(q.signature);
    if (s.kind !== 'ecc') throw new Error('fixture is not an ECC signature');
    const padded = marshal((w) => marshalSignature(w, { ...s, r: Buffer.concat([Buffer.alloc(1), s.r]) }));
    expect(checkSignature(k, q.message, padded).ok).toBe(true);
    const m = Buffer.from(q.message);
    m[m.length - 1]! ^= 1;
    expect(checkSignature(k, m, q.signature)).toMatchObject({ ok: false, reason: 'ecdsa/sha256 signature does not verify with the AK' });
  });

  it('says why: unsigned, unparsable, key of the wrong type', () => {
    const rsa = signingKeyFrom({ tpmtPublic: quote('rsa-rsassa').akPublic });
    const q = quote('ecc-p256');
    expect(checkSignature(rsa, q.message, Buffer.from([0x00, 0x10]))).toMatchObject({ ok: false, reason: expect.stringMatching(/TPM_ALG_NULL/) });
    expect(checkSignature(rsa, q.message, Buffer.from([0x00]))).toMatchObject({ ok: false, scheme: 'unknown' });
    expect(checkSignature(rsa, q.message, q.signature)).toMatchObject({ ok: false, reason: expect.stringMatching(/needs an EC key, got rsa/) });
  });

  it('decodeAttest returns a wrong magic for the caller to judge; parseAttest refuses it', () => {
    const m = Buffer.from(quote('ecc-p256').message);
    m[0]! ^= 1;
    expect(() => parseAttest(m)).toThrow(/not TPM_GENERATED_VALUE/);
    const a = decodeAttest(m);
    expect(a.magic).toBe(0xfe544347);
    expect(a.attested.kind).toBe('quote');
    expect(() => decodeAttest(m.subarray(0, 3))).toThrow(TpmProtocolError);
  });
});
