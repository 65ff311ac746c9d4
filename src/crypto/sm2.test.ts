import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SM2_P256, SM2_TEST_FP256, doubleScalarMult, isOnCurve, scalarMult, generator } from './ec.js';
import { CryptoError } from './errors.js';
import {
  sm2ComputeZ,
  sm2GenerateKey,
  sm2KeyFromPrivate,
  sm2MessageDigest,
  sm2PrivateKeyFromPem,
  sm2PrivateKeyToPem,
  sm2PublicKeyFromBytes,
  sm2PublicKeyFromPem,
  sm2PublicKeyFromSpki,
  sm2PublicKeyToBytes,
  sm2PublicKeyToPem,
  sm2PublicKeyToSpki,
  sm2Sign,
  sm2SignatureFromDer,
  sm2SignatureFromRaw,
  sm2SignatureToDer,
  sm2SignatureToRaw,
  sm2Verify,
} from './sm2.js';
import { skipUnless } from '../../test/helpers/require.js';

interface Vector {
  name: string;
  curve: string;
  id: string;
  message: string;
  d: string;
  xA: string;
  yA: string;
  Z: string;
  e: string;
  k: string;
  r: string;
  s: string;
}
const fixture = JSON.parse(readFileSync(new URL('../../test/fixtures/crypto/sm2-sign-vectors.json', import.meta.url), 'utf8')) as { vectors: Vector[] };
const big = (h: string): bigint => BigInt('0x' + h);
const hex = (b: Buffer): string => b.toString('hex').toUpperCase();

describe('SM2 curve arithmetic', () => {
  it('generators lie on their curves and n·G is infinity', () => {
    for (const c of [SM2_P256, SM2_TEST_FP256]) {
      expect(isOnCurve(c, generator(c))).toBe(true);
      expect(scalarMult(c, c.n, generator(c))).toBeNull();
      const gm1 = scalarMult(c, c.n - 1n, generator(c))!;
      expect(gm1.x).toBe(c.gx);
      expect(gm1.y).toBe(c.p - c.gy);
    }
  });

  it('the blinded ladder agrees with plain double-and-add (u·G + 0·Q) for edge and random scalars, k taken mod n', () => {
    for (const c of [SM2_P256, SM2_TEST_FP256]) {
      const G = generator(c);
      const scalars = [1n, 2n, 3n, c.n - 2n, c.n + 1n, 2n * c.n + 5n, 1n << 255n, (1n << 256n) - 1n];
      for (let i = 0; i < 6; i++) scalars.push(BigInt('0x' + randomBytes(32).toString('hex')));
      for (const k of scalars) {
        const expected = doubleScalarMult(c, k % c.n, 0n, G);
        expect(scalarMult(c, k, G), `${c.name} k=${k.toString(16)}`).toEqual(expected);
      }
      expect(scalarMult(c, 0n, G)).toBeNull();
      expect(scalarMult(c, -1n, G)).toEqual(scalarMult(c, c.n - 1n, G));
    }
  });

  it('blinding changes the computation, not the result: repeated calls with one secret agree', () => {
    const k = BigInt('0x' + randomBytes(32).toString('hex')) % SM2_P256.n;
    const first = scalarMult(SM2_P256, k, generator(SM2_P256));
    for (let i = 0; i < 4; i++) expect(scalarMult(SM2_P256, k, generator(SM2_P256))).toEqual(first);
  });
});

describe('SM2 known-answer vectors', () => {
  for (const v of fixture.vectors) {
    it(v.name, () => {
      const curve = v.curve === 'sm2p256v1' ? SM2_P256 : SM2_TEST_FP256;
      const key = sm2KeyFromPrivate(big(v.d), curve);
      expect(key.publicKey.point.x).toBe(big(v.xA));
      expect(key.publicKey.point.y).toBe(big(v.yA));
      expect(hex(sm2ComputeZ(key.publicKey, v.id))).toBe(v.Z);
      expect(hex(sm2MessageDigest(key.publicKey, Buffer.from(v.message), v.id))).toBe(v.e);
      const sig = sm2Sign(key, Buffer.from(v.message), { id: v.id, k: big(v.k) });
      expect(sig.r).toBe(big(v.r));
      expect(sig.s).toBe(big(v.s));
      expect(sm2Verify(key.publicKey, Buffer.from(v.message), sig, { id: v.id })).toBe(true);
      // The ID is bound into the signature: the same signature fails under another ID or message.
      expect(sm2Verify(key.publicKey, Buffer.from(v.message), sig, { id: v.id + 'X' })).toBe(false);
      expect(sm2Verify(key.publicKey, Buffer.from(v.message + '.'), sig, { id: v.id })).toBe(false);
      expect(sm2Verify(key.publicKey, Buffer.from(v.message), { r: sig.r, s: sig.s ^ 1n }, { id: v.id })).toBe(false);
    });
  }
});

describe('SM2 sign/verify and encodings', () => {
  it('round-trips random keys and signatures, default ID 1234567812345678', () => {
    const key = sm2GenerateKey();
    const msg = Buffer.from('hypervisor image');
    const sig = sm2Sign(key, msg);
    expect(sm2Verify(key.publicKey, msg, sig)).toBe(true);
    expect(sm2Verify(key.publicKey, msg, sig, { id: '1234567812345678' })).toBe(true);
    expect(sm2Verify(key.publicKey, msg, sig, { id: '' })).toBe(false);
    const raw = sm2SignatureToRaw(sig);
    expect(raw.length).toBe(64);
    expect(sm2SignatureFromRaw(raw)).toEqual(sig);
    expect(sm2SignatureFromDer(sm2SignatureToDer(sig))).toEqual(sig);
    expect(sm2PublicKeyFromBytes(sm2PublicKeyToBytes(key.publicKey)).point).toEqual(key.publicKey.point);
    expect(sm2PublicKeyFromSpki(sm2PublicKeyToSpki(key.publicKey)).point).toEqual(key.publicKey.point);
    expect(sm2PrivateKeyFromPem(sm2PrivateKeyToPem(key)).d).toBe(key.d);
  });

  it('rejects malformed input with typed one-line errors', () => {
    expect(() => sm2SignatureFromRaw(Buffer.alloc(63))).toThrow(/63 bytes, expected 64/);
    expect(() => sm2SignatureFromDer(Buffer.from('3006020101020101ff', 'hex'))).toThrow(CryptoError);
    expect(() => sm2SignatureFromDer(Buffer.from('30060201010201', 'hex'))).toThrow(/byte/);
    const bad = sm2PublicKeyToBytes(sm2GenerateKey().publicKey);
    bad[64] ^= 1;
    expect(() => sm2PublicKeyFromBytes(bad)).toThrow(/not on sm2p256v1/);
    expect(() => sm2PublicKeyFromPem('nothing')).toThrow(/no PEM block/);
  });
});

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
const opensslReason = skipUnless('SM2 interop with openssl', [['openssl', openssl.status === 0 ? undefined : 'openssl not runnable (apt-get install openssl)']]);

describe.skipIf(!!opensslReason)('SM2 interop with openssl (distid 1234567812345678)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sm2-interop-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const run = (args: string[]): ReturnType<typeof spawnSync> => spawnSync('openssl', args, { encoding: 'utf8', cwd: dir });
  const msg = Buffer.from('measured hypervisor image \x00\x01\x02');
  writeFileSync(join(dir, 'msg'), msg);

  it('openssl signs (key from openssl genpkey), we verify', () => {
    expect(run(['genpkey', '-algorithm', 'SM2', '-out', 'ossl.pem']).status).toBe(0);
    expect(run(['pkey', '-in', 'ossl.pem', '-pubout', '-out', 'ossl.pub']).status).toBe(0);
    const r1 = run(['pkeyutl', '-sign', '-rawin', '-digest', 'sm3', '-inkey', 'ossl.pem', '-in', 'msg', '-out', 'sig1', '-pkeyopt', 'distid:1234567812345678']);
    expect(r1.status, String(r1.stderr)).toBe(0);
    const r2 = run(['dgst', '-sm3', '-sign', 'ossl.pem', '-sigopt', 'distid:1234567812345678', '-out', 'sig2', 'msg']);
    expect(r2.status, String(r2.stderr)).toBe(0);
    const pub = sm2PublicKeyFromPem(readFileSync(join(dir, 'ossl.pub'), 'utf8'));
    const priv = sm2PrivateKeyFromPem(readFileSync(join(dir, 'ossl.pem'), 'utf8'));
    expect(priv.publicKey.point).toEqual(pub.point);
    for (const f of ['sig1', 'sig2']) {
      const sig = sm2SignatureFromDer(readFileSync(join(dir, f)));
      expect(sm2Verify(pub, msg, sig)).toBe(true);
      expect(sm2Verify(pub, msg, sig, { id: 'ALICE123@YAHOO.COM' })).toBe(false);
    }
  });

  it('we sign (our key, our PEM), openssl verifies with both commands; rejects another ID', () => {
    const key = sm2GenerateKey();
    writeFileSync(join(dir, 'ours.pem'), sm2PrivateKeyToPem(key));
    writeFileSync(join(dir, 'ours.pub'), sm2PublicKeyToPem(key.publicKey));
    writeFileSync(join(dir, 'oursig'), sm2SignatureToDer(sm2Sign(key, msg)));
    const v1 = run(['pkeyutl', '-verify', '-rawin', '-digest', 'sm3', '-pubin', '-inkey', 'ours.pub', '-in', 'msg', '-sigfile', 'oursig', '-pkeyopt', 'distid:1234567812345678']);
    expect(v1.status, String(v1.stderr)).toBe(0);
    expect(String(v1.stdout)).toMatch(/Verified Successfully/);
    const v2 = run(['dgst', '-sm3', '-verify', 'ours.pub', '-sigopt', 'distid:1234567812345678', '-signature', 'oursig', 'msg']);
    expect(String(v2.stdout)).toMatch(/Verified OK/);
    const v3 = run(['dgst', '-sm3', '-verify', 'ours.pub', '-sigopt', 'distid:ALICE123@YAHOO.COM', '-signature', 'oursig', 'msg']);
    expect(v3.status).not.toBe(0);
    // openssl reads our private-key PEM and its signature verifies with our code.
    const s = run(['pkeyutl', '-sign', '-rawin', '-digest', 'sm3', '-inkey', 'ours.pem', '-in', 'msg', '-out', 'sig3', '-pkeyopt', 'distid:1234567812345678']);
    expect(s.status, String(s.stderr)).toBe(0);
    expect(sm2Verify(key.publicKey, msg, sm2SignatureFromDer(readFileSync(join(dir, 'sig3'))))).toBe(true);
  });

  it('we import the SEC1 ECPrivateKey form openssl writes', () => {
    const r = run(['ec', '-in', 'ossl.pem', '-out', 'sec1.pem']);
    expect(r.status, String(r.stderr)).toBe(0);
    const sec1 = readFileSync(join(dir, 'sec1.pem'), 'utf8');
    expect(sec1).toMatch(/BEGIN (EC|SM2) PRIVATE KEY/); // OpenSSL 3.0 labels SEC1 SM2 keys "SM2 PRIVATE KEY"
    const a = sm2PrivateKeyFromPem(sec1);
    const b = sm2PrivateKeyFromPem(readFileSync(join(dir, 'ossl.pem'), 'utf8'));
    expect(a.d).toBe(b.d);
  });
});
