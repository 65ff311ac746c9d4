import { createHash } from 'node:crypto';
import {
  type AffinePoint,
  type Curve,
  SM2_P256,
  bigFromBytes,
  bigToBytes,
  doubleScalarMult,
  generator,
  isOnCurve,
  mod,
  modInv,
  randomInRange,
  scalarMult,
} from './ec.js';
import {
  TAG,
  children,
  decodeOid,
  derUint,
  encodeOid,
  encodeSequence,
  encodeTlv,
  encodeUint,
  expectTag,
  pemDecode,
  pemEncode,
  readSingle,
} from './der.js';
import { CryptoError } from './errors.js';

/**
 * SM2 digital signatures as GB/T 32918.2-2016 (GM/T 0003.2-2012) specifies them, with the user's
 * distinguishing ID folded in through Z_A, and SM3 (node's OpenSSL) as the hash.
 */

/** The default distinguishing ID of GM/T 0009-2012 (also OpenSSL's `distid` in the examples). */
export const SM2_DEFAULT_ID = Buffer.from('1234567812345678', 'ascii');
export const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
export const OID_SM2_CURVE = '1.2.156.10197.1.301';

export interface Sm2PublicKey {
  curve: Curve;
  point: AffinePoint;
}

export interface Sm2PrivateKey {
  curve: Curve;
  d: bigint;
  publicKey: Sm2PublicKey;
}

export interface Sm2Signature {
  r: bigint;
  s: bigint;
}

export interface Sm2SignOptions {
  /** Distinguishing ID (default "1234567812345678"). */
  id?: Uint8Array | string;
  /** Fixed per-signature nonce: ONLY for reproducing published known-answer vectors. */
  k?: bigint;
}

function idBytes(id: Uint8Array | string | undefined): Buffer {
  if (id === undefined) return SM2_DEFAULT_ID;
  return typeof id === 'string' ? Buffer.from(id, 'utf8') : Buffer.from(id);
}

export function sm3(...parts: Uint8Array[]): Buffer {
  const h = createHash('sm3');
  for (const p of parts) h.update(p);
  return h.digest();
}

export function sm2KeyFromPrivate(d: bigint, curve: Curve = SM2_P256): Sm2PrivateKey {
  if (d < 1n || d > curve.n - 2n) throw new CryptoError(`SM2 private key out of range [1, n-2] for ${curve.name}`);
  const point = scalarMult(curve, d, generator(curve));
  if (!point) throw new CryptoError('SM2 private key gives the point at infinity');
  return { curve, d, publicKey: { curve, point } };
}

export function sm2GenerateKey(curve: Curve = SM2_P256): Sm2PrivateKey {
  return sm2KeyFromPrivate(randomInRange(1n, curve.n - 2n), curve);
}

/** Z_A = SM3(ENTL_A ‖ ID_A ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A). */
export function sm2ComputeZ(pub: Sm2PublicKey, id?: Uint8Array | string): Buffer {
  const ident = idBytes(id);
  const bits = ident.length * 8;
  if (bits > 0xffff) throw new CryptoError(`SM2 distinguishing ID too long: ${ident.length} bytes (max 8191)`);
  const c = pub.curve;
  const L = c.size;
  return sm3(
    Buffer.from([bits >> 8, bits & 0xff]),
    ident,
    bigToBytes(c.a, L),
    bigToBytes(c.b, L),
    bigToBytes(c.gx, L),
    bigToBytes(c.gy, L),
    bigToBytes(pub.point.x, L),
    bigToBytes(pub.point.y, L),
  );
}

/** e = SM3(Z_A ‖ M) as the integer the signature equations use. */
export function sm2MessageDigest(pub: Sm2PublicKey, message: Uint8Array, id?: Uint8Array | string): Buffer {
  return sm3(sm2ComputeZ(pub, id), message);
}

export function sm2Sign(key: Sm2PrivateKey, message: Uint8Array, opts: Sm2SignOptions = {}): Sm2Signature {
  const c = key.curve;
  const e = bigFromBytes(sm2MessageDigest(key.publicKey, message, opts.id));
  const dInv = modInv(1n + key.d, c.n);
  for (let attempt = 0; attempt < 64; attempt++) {
    const k = opts.k ?? randomInRange(1n, c.n - 1n);
    const kG = scalarMult(c, k, generator(c));
    if (!kG) continue;
    const r = mod(e + kG.x, c.n);
    if (r === 0n || r + k === c.n) {
      if (opts.k !== undefined) throw new CryptoError('SM2: the fixed nonce k gives r = 0 or r + k = n');
      continue;
    }
    const s = mod(dInv * (k - r * key.d), c.n);
    if (s === 0n) {
      if (opts.k !== undefined) throw new CryptoError('SM2: the fixed nonce k gives s = 0');
      continue;
    }
    return { r, s };
  }
  throw new CryptoError('SM2: no valid signature after 64 nonces (broken random source?)');
}

export function sm2Verify(pub: Sm2PublicKey, message: Uint8Array, sig: Sm2Signature, opts: { id?: Uint8Array | string } = {}): boolean {
  const c = pub.curve;
  const { r, s } = sig;
  if (r < 1n || r >= c.n || s < 1n || s >= c.n) return false;
  const t = mod(r + s, c.n);
  if (t === 0n) return false;
  const e = bigFromBytes(sm2MessageDigest(pub, message, opts.id));
  const P = doubleScalarMult(c, s, t, pub.point);
  if (!P) return false;
  return mod(e + P.x, c.n) === r;
}

// ---- signature encodings ----

/** Raw 64-byte r ‖ s (32-byte big-endian each). */
export function sm2SignatureToRaw(sig: Sm2Signature, curve: Curve = SM2_P256): Buffer {
  return Buffer.concat([bigToBytes(sig.r, curve.size), bigToBytes(sig.s, curve.size)]);
}

export function sm2SignatureFromRaw(raw: Uint8Array, curve: Curve = SM2_P256): Sm2Signature {
  if (raw.length !== 2 * curve.size) throw new CryptoError(`SM2 raw signature: ${raw.length} bytes, expected ${2 * curve.size} (r ‖ s)`);
  return { r: bigFromBytes(raw.subarray(0, curve.size)), s: bigFromBytes(raw.subarray(curve.size)) };
}

/** DER SEQUENCE { INTEGER r, INTEGER s } (what OpenSSL writes). */
export function sm2SignatureToDer(sig: Sm2Signature): Buffer {
  return encodeSequence(encodeUint(sig.r), encodeUint(sig.s));
}

export function sm2SignatureFromDer(der: Uint8Array): Sm2Signature {
  const seq = readSingle(Buffer.from(der), TAG.SEQUENCE, 'SM2 DER signature');
  const kids = children(seq, 'SM2 DER signature');
  if (kids.length !== 2) throw new CryptoError(`SM2 DER signature: ${kids.length} elements in SEQUENCE, expected 2 (r, s)`);
  return { r: derUint(kids[0]!, 'SM2 DER signature r'), s: derUint(kids[1]!, 'SM2 DER signature s') };
}

// ---- public keys ----

/** Uncompressed point 04 ‖ x ‖ y. */
export function sm2PublicKeyToBytes(pub: Sm2PublicKey): Buffer {
  const L = pub.curve.size;
  return Buffer.concat([Buffer.from([4]), bigToBytes(pub.point.x, L), bigToBytes(pub.point.y, L)]);
}

export function sm2PublicKeyFromBytes(bytes: Uint8Array, curve: Curve = SM2_P256): Sm2PublicKey {
  const L = curve.size;
  if (bytes.length !== 1 + 2 * L || bytes[0] !== 4)
    throw new CryptoError(`SM2 public key: expected ${1 + 2 * L}-byte uncompressed point 04‖x‖y, got ${bytes.length} bytes starting 0x${(bytes[0] ?? 0).toString(16)}`);
  const point = { x: bigFromBytes(bytes.subarray(1, 1 + L)), y: bigFromBytes(bytes.subarray(1 + L)) };
  if (!isOnCurve(curve, point)) throw new CryptoError(`SM2 public key: point is not on ${curve.name}`);
  return { curve, point };
}

function algorithmIdentifier(): Buffer {
  return encodeSequence(encodeOid(OID_EC_PUBLIC_KEY), encodeOid(OID_SM2_CURVE));
}

/** SubjectPublicKeyInfo DER (id-ecPublicKey with the SM2 curve OID), as OpenSSL writes it. */
export function sm2PublicKeyToSpki(pub: Sm2PublicKey): Buffer {
  requireSm2Curve(pub.curve);
  return encodeSequence(algorithmIdentifier(), encodeTlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), sm2PublicKeyToBytes(pub)])));
}

export function sm2PublicKeyToPem(pub: Sm2PublicKey): string {
  return pemEncode('PUBLIC KEY', sm2PublicKeyToSpki(pub));
}

function checkAlgorithm(node: ReturnType<typeof children>[number] | undefined, what: string): void {
  const alg = children(expectTag(node, TAG.SEQUENCE, `${what} algorithm`), `${what} algorithm`);
  const oid = decodeOid(alg[0]!, `${what} algorithm OID`);
  if (oid !== OID_EC_PUBLIC_KEY && oid !== OID_SM2_CURVE) throw new CryptoError(`${what}: algorithm ${oid} is not id-ecPublicKey/SM2`);
  if (oid === OID_EC_PUBLIC_KEY) {
    const curve = decodeOid(expectTag(alg[1], TAG.OID, `${what} curve`), `${what} curve OID`);
    if (curve !== OID_SM2_CURVE) throw new CryptoError(`${what}: curve ${curve} is not SM2 (${OID_SM2_CURVE})`);
  }
}

export function sm2PublicKeyFromSpki(der: Uint8Array): Sm2PublicKey {
  const seq = readSingle(Buffer.from(der), TAG.SEQUENCE, 'SM2 SPKI');
  const kids = children(seq, 'SM2 SPKI');
  checkAlgorithm(kids[0], 'SM2 SPKI');
  const bits = expectTag(kids[1], TAG.BIT_STRING, 'SM2 SPKI subjectPublicKey');
  if (bits.value[0] !== 0) throw new CryptoError(`SM2 SPKI: BIT STRING at byte ${bits.offset} has ${bits.value[0]} unused bits`);
  return sm2PublicKeyFromBytes(bits.value.subarray(1));
}

/** Public key from PEM (SPKI "PUBLIC KEY") or from a private-key PEM. */
export function sm2PublicKeyFromPem(pem: string): Sm2PublicKey {
  const { label, der } = pemDecode(pem, 'SM2 public key PEM');
  if (label === 'PUBLIC KEY') return sm2PublicKeyFromSpki(der);
  return sm2PrivateKeyFromPem(pem).publicKey;
}

// ---- private keys ----

function parseSec1(der: Buffer, what: string, base: number): Sm2PrivateKey {
  const seq = readSingle(der, TAG.SEQUENCE, what, base);
  const kids = children(seq, what);
  if (derUint(kids[0]!, `${what} version`) !== 1n) throw new CryptoError(`${what}: ECPrivateKey version is not 1`);
  const d = expectTag(kids[1], TAG.OCTET_STRING, `${what} privateKey`);
  for (const k of kids.slice(2)) {
    if (k.tag === 0xa0) {
      const curve = decodeOid(readSingle(k.value, TAG.OID, `${what} parameters`, k.offset + 2), `${what} curve`);
      if (curve !== OID_SM2_CURVE) throw new CryptoError(`${what}: curve ${curve} is not SM2 (${OID_SM2_CURVE})`);
    }
  }
  const key = sm2KeyFromPrivate(bigFromBytes(d.value));
  for (const k of kids.slice(2)) {
    if (k.tag === 0xa1) {
      const bits = readSingle(k.value, TAG.BIT_STRING, `${what} publicKey`, k.offset + 2);
      const embedded = sm2PublicKeyFromBytes(bits.value.subarray(1));
      if (embedded.point.x !== key.publicKey.point.x || embedded.point.y !== key.publicKey.point.y)
        throw new CryptoError(`${what}: embedded public key at byte ${k.offset} does not match the private key`);
    }
  }
  return key;
}

/** Private key from DER: PKCS#8 PrivateKeyInfo or SEC1 ECPrivateKey. */
export function sm2PrivateKeyFromDer(der: Uint8Array): Sm2PrivateKey {
  const buf = Buffer.from(der);
  const seq = readSingle(buf, TAG.SEQUENCE, 'SM2 private key');
  const kids = children(seq, 'SM2 private key');
  if (kids[1]?.tag === TAG.SEQUENCE) {
    // PKCS#8: version, AlgorithmIdentifier, OCTET STRING { ECPrivateKey }
    if (derUint(kids[0]!, 'PKCS#8 version') !== 0n) throw new CryptoError('SM2 PKCS#8: version is not 0 (encrypted keys are not supported)');
    checkAlgorithm(kids[1], 'SM2 PKCS#8');
    const inner = expectTag(kids[2], TAG.OCTET_STRING, 'SM2 PKCS#8 privateKey');
    return parseSec1(inner.value, 'SM2 PKCS#8 ECPrivateKey', inner.offset + (inner.length - inner.value.length));
  }
  return parseSec1(buf, 'SM2 SEC1 ECPrivateKey', 0);
}

export function sm2PrivateKeyFromPem(pem: string): Sm2PrivateKey {
  const { der } = pemDecode(pem, 'SM2 private key PEM', ['PRIVATE KEY', 'EC PRIVATE KEY', 'SM2 PRIVATE KEY']);
  return sm2PrivateKeyFromDer(der);
}

function sec1(key: Sm2PrivateKey, withParams: boolean): Buffer {
  const items = [encodeUint(1n), encodeTlv(TAG.OCTET_STRING, bigToBytes(key.d, key.curve.size))];
  if (withParams) items.push(encodeTlv(0xa0, encodeOid(OID_SM2_CURVE)));
  items.push(encodeTlv(0xa1, encodeTlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), sm2PublicKeyToBytes(key.publicKey)]))));
  return encodeSequence(...items);
}

/** PKCS#8 PrivateKeyInfo DER (what `openssl genpkey -algorithm SM2` writes). */
export function sm2PrivateKeyToPkcs8(key: Sm2PrivateKey): Buffer {
  requireSm2Curve(key.curve);
  return encodeSequence(encodeUint(0n), algorithmIdentifier(), encodeTlv(TAG.OCTET_STRING, sec1(key, false)));
}

export function sm2PrivateKeyToPem(key: Sm2PrivateKey): string {
  return pemEncode('PRIVATE KEY', sm2PrivateKeyToPkcs8(key));
}

function requireSm2Curve(c: Curve): void {
  if (c !== SM2_P256) throw new CryptoError(`SM2 key encoding: only the recommended curve has an OID (key is on ${c.name})`);
}
