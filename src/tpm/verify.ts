/**
 * Verifier-side helpers: TPM public areas to Node keys, signature checks over TPMS_ATTEST,
 * PCR digests, and tpm2-tools' "serialized" PCR file format. No TPM needed.
 */
import { constants, createPublicKey, verify as cryptoVerify, KeyObject } from 'node:crypto';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { SM2_P256, bigFromBytes, doubleScalarMult, isOnCurve, mod } from '../crypto/ec.js';
import { TPM_ALG, algName, hashAlgById, digest, type HashAlg } from './alg.js';
import { TPM_ECC_CURVE, TPM_GENERATED_VALUE } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { parseAttest, parseSignature, type PcrSelection, type TpmsAttest, type TpmtPublic, type TpmtSignature } from './structures.js';

/** A public key ready to verify signatures (built by signing-key.ts from a TPMT_PUBLIC or a PEM). */
export interface SigningKey {
  key: KeyObject;
  /** The TPMT_PUBLIC the key came from, when given (SM2 signatures need it). */
  public?: TpmtPublic;
  /** e.g. "ecdsa P-256", "rsa 2048", "sm2 SM2-P256". */
  description: string;
  /** The key's declared signing scheme (TPM_ALG_ID) when not TPM_ALG_NULL: signatures must use it. */
  scheme?: number;
  /** Hash of the key's signing scheme (tpm2-tools spelling); sha256 when the key has none. */
  hashName: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, hex. */
  spkiSha256: string;
  /** TPM Name (hex) when the TPMT_PUBLIC is known. */
  name?: string;
}

/** A verification that failed (bad signature, digest mismatch, wrong nonce); names the claim. */
export class TpmVerifyError extends HyperEnclaveError {
  constructor(message: string) {
    super(message, EXIT.VERIFY_FAILED);
  }
}

interface CurveInfo {
  oid: string;
  size: number;
  name: string;
}
const CURVES: Record<number, CurveInfo> = {
  [TPM_ECC_CURVE.NIST_P256]: { oid: '1.2.840.10045.3.1.7', size: 32, name: 'P-256' },
  [TPM_ECC_CURVE.NIST_P384]: { oid: '1.3.132.0.34', size: 48, name: 'P-384' },
  [TPM_ECC_CURVE.NIST_P521]: { oid: '1.3.132.0.35', size: 66, name: 'P-521' },
  [TPM_ECC_CURVE.SM2_P256]: { oid: '1.2.156.10197.1.301', size: 32, name: 'SM2' },
};

export function curveInfo(curveId: number): CurveInfo {
  const c = CURVES[curveId];
  if (!c) throw new TpmProtocolError(`ECC curve 0x${curveId.toString(16)} is not supported`);
  return c;
}

/** Node's name for a TPM curve (for generateKeyPair / ECDH). */
export function nodeCurveName(curveId: number): string {
  return { [TPM_ECC_CURVE.NIST_P256]: 'prime256v1', [TPM_ECC_CURVE.NIST_P384]: 'secp384r1', [TPM_ECC_CURVE.NIST_P521]: 'secp521r1', [TPM_ECC_CURVE.SM2_P256]: 'SM2' }[curveId] ?? curveInfo(curveId).name;
}

// Minimal DER for an EC SubjectPublicKeyInfo (works for every curve OpenSSL knows, SM2 included).
function derLen(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const b: number[] = [];
  while (n > 0) (b.unshift(n & 0xff), (n >>= 8));
  return Buffer.from([0x80 | b.length, ...b]);
}
function tlv(tag: number, v: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLen(v.length), v]);
}
function oid(s: string): Buffer {
  const p = s.split('.').map(Number);
  const out = [40 * p[0]! + p[1]!];
  for (const n of p.slice(2)) {
    const bytes = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift(0x80 | (v & 0x7f));
    out.push(...bytes);
  }
  return tlv(0x06, Buffer.from(out));
}

function leftPad(b: Buffer, size: number, what: string): Buffer {
  if (b.length > size) throw new TpmProtocolError(`${what}: ${b.length} bytes exceed the curve size ${size}`);
  return b.length === size ? b : Buffer.concat([Buffer.alloc(size - b.length), b]);
}

/** First line of an error's message (OpenSSL's can span several). */
function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

/** The Node public key of a TPM RSA or ECC public area. */
export function publicKeyFromTpmt(pub: TpmtPublic): KeyObject {
  if (pub.type === TPM_ALG.RSA) {
    if (pub.unique.length === 0) throw new TpmProtocolError('TPMT_PUBLIC: RSA modulus is empty');
    const e = pub.parameters.exponent || 65537;
    const eb = Buffer.alloc(4);
    eb.writeUInt32BE(e >>> 0);
    let i = 0;
    while (i < 3 && eb[i] === 0) i++;
    try {
      return createPublicKey({ key: { kty: 'RSA', n: pub.unique.toString('base64url'), e: eb.subarray(i).toString('base64url') }, format: 'jwk' });
    } catch (err) {
      throw new TpmProtocolError(`TPMT_PUBLIC: RSA modulus is not a valid public key: ${firstLine(err)}`);
    }
  }
  if (pub.type === TPM_ALG.ECC) {
    const c = curveInfo(pub.parameters.curveId);
    const point = Buffer.concat([Buffer.from([4]), leftPad(pub.unique.x, c.size, 'ECC x'), leftPad(pub.unique.y, c.size, 'ECC y')]);
    const spki = tlv(0x30, Buffer.concat([tlv(0x30, Buffer.concat([oid('1.2.840.10045.2.1'), oid(c.oid)])), tlv(0x03, Buffer.concat([Buffer.from([0]), point]))]));
    try {
      return createPublicKey({ key: spki, format: 'der', type: 'spki' });
    } catch (e) {
      throw new TpmProtocolError(`TPMT_PUBLIC: ECC point is not a valid ${c.name} public key: ${firstLine(e)}`);
    }
  }
  throw new TpmProtocolError(`TPMT_PUBLIC: object type ${algName(pub.type)} has no public key`);
}

export function publicKeyPem(pub: TpmtPublic): string {
  return publicKeyFromTpmt(pub).export({ type: 'spki', format: 'pem' }).toString();
}

function sigHash(id: number): HashAlg {
  const h = hashAlgById(id);
  if (!h) throw new TpmVerifyError(`signature hash algorithm ${algName(id)} is not supported`);
  return h;
}

const ECDSA_SIZES: Record<string, number> = { prime256v1: 32, secp384r1: 48, secp521r1: 66, SM2: 32 };

/** r or s as exactly `size` bytes: leading zeros dropped or added; undefined when it is longer. */
function fixedWidth(b: Buffer, size: number): Buffer | undefined {
  let v = b;
  while (v.length > size && v[0] === 0) v = v.subarray(1);
  return v.length > size ? undefined : leftPad(v, size, 'ECDSA r/s');
}

/**
 * Checks a TPMT_SIGNATURE over message bytes (a TPMS_ATTEST) with an RSA or ECC key:
 * RSASSA, RSAPSS, ECDSA, and SM2 (which needs the key's TPM public area). Returns false for a
 * signature that does not verify; throws TpmVerifyError when key and signature do not go together.
 */
export function verifySignature(key: TpmtPublic | KeyObject | SigningKey, message: Uint8Array, sig: TpmtSignature | Uint8Array): boolean {
  const s = sig instanceof Uint8Array ? parseSignature(sig) : sig;
  const area = key instanceof KeyObject ? undefined : 'spkiSha256' in key ? key.public : key;
  // Imported only when needed: SM2 checks work on the public area alone.
  const nodeKey = (): KeyObject => (key instanceof KeyObject ? key : 'spkiSha256' in key ? key.key : publicKeyFromTpmt(key));
  switch (s.sigAlg) {
    case TPM_ALG.RSASSA:
    case TPM_ALG.RSAPSS: {
      if (s.kind !== 'rsa') return false;
      const k = nodeKey();
      if (k.asymmetricKeyType !== 'rsa') throw new TpmVerifyError(`an ${algName(s.sigAlg)} signature needs an RSA key, got ${k.asymmetricKeyType}`);
      const h = sigHash(s.hash);
      const padding = s.sigAlg === TPM_ALG.RSASSA ? constants.RSA_PKCS1_PADDING : constants.RSA_PKCS1_PSS_PADDING;
      return cryptoVerify(h.nodeName, message, { key: k, padding, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, s.sig);
    }
    case TPM_ALG.ECDSA: {
      if (s.kind !== 'ecc') return false;
      const k = nodeKey();
      if (k.asymmetricKeyType !== 'ec') throw new TpmVerifyError(`an ECDSA signature needs an EC key, got ${k.asymmetricKeyType}`);
      const h = sigHash(s.hash);
      const curve = k.asymmetricKeyDetails?.namedCurve ?? '';
      const size = ECDSA_SIZES[curve];
      if (!size) throw new TpmVerifyError(`ECDSA on curve ${curve || 'unknown'} is not supported (P-256, P-384, P-521, SM2 are)`);
      const r = fixedWidth(s.r, size);
      const sv = fixedWidth(s.s, size);
      if (!r || !sv) return false;
      return cryptoVerify(h.nodeName, message, { key: k, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, sv]));
    }
    case TPM_ALG.SM2: {
      if (s.kind !== 'ecc') return false;
      if (!area || area.type !== TPM_ALG.ECC || area.parameters.curveId !== TPM_ECC_CURVE.SM2_P256) {
        throw new TpmVerifyError('an SM2 signature needs the TPM public area of an SM2-curve key');
      }
      return sm2VerifyTpmDigest(area.unique.x, area.unique.y, digest(sigHash(s.hash), message), s.r, s.s);
    }
    default:
      throw new TpmVerifyError(`signature algorithm ${algName(s.sigAlg)} cannot be verified here (RSASSA, RSAPSS, ECDSA, SM2 are)`);
  }
}

/** The outcome of a signature check, for verifiers that report rather than throw. */
export interface SignatureCheck {
  ok: boolean;
  /** Signature scheme as named by algName (ecdsa, rsassa, rsapss, sm2), 'unknown' when unparsable. */
  scheme: string;
  /** Hash of the signature (tpm2-tools spelling), '' when unknown. */
  hashName: string;
  reason: string;
}

/** verifySignature over TPMT_SIGNATURE bytes that never throws: says why a signature is refused. */
export function checkSignature(key: SigningKey, message: Uint8Array, signature: Uint8Array): SignatureCheck {
  let s: TpmtSignature;
  try {
    s = parseSignature(signature);
  } catch (e) {
    return { ok: false, scheme: 'unknown', hashName: '', reason: firstLine(e) };
  }
  const scheme = algName(s.sigAlg);
  if (s.kind === 'null') return { ok: false, scheme, hashName: '', reason: 'TPMT_SIGNATURE: sigAlg is TPM_ALG_NULL (unsigned)' };
  if (s.kind === 'hmac') return { ok: false, scheme, hashName: '', reason: 'hmac signatures are not supported' };
  const hash = hashAlgById(s.hash);
  if (!hash) return { ok: false, scheme, hashName: '', reason: `signature hash ${algName(s.hash)} unknown` };
  try {
    const ok = verifySignature(key, message, s);
    // A valid signature in another scheme than the key declares is not one the TPM would make.
    if (ok && key.scheme !== undefined && key.scheme !== s.sigAlg)
      return { ok: false, scheme, hashName: hash.name, reason: `the signature's scheme ${scheme} is not the AK's declared scheme ${algName(key.scheme)}` };
    return { ok, scheme, hashName: hash.name, reason: ok ? 'verifies' : `${scheme}/${hash.name} signature does not verify with the AK` };
  } catch (e) {
    return { ok: false, scheme, hashName: hash.name, reason: `${scheme} verification error: ${firstLine(e)}` };
  }
}

/**
 * SM2 verification as a TPM signs: over e = H(message) directly (the TPM is given a digest and
 * adds no Z_A), on the SM2 curve.
 */
function sm2VerifyTpmDigest(x: Buffer, y: Buffer, e: Buffer, rb: Buffer, sb: Buffer): boolean {
  const c = SM2_P256;
  const Q = { x: bigFromBytes(x), y: bigFromBytes(y) };
  if (!isOnCurve(c, Q)) return false;
  const r = bigFromBytes(rb);
  const s = bigFromBytes(sb);
  if (r < 1n || r >= c.n || s < 1n || s >= c.n) return false;
  const t = mod(r + s, c.n);
  if (t === 0n) return false;
  const P = doubleScalarMult(c, s, t, Q);
  return !!P && mod(bigFromBytes(e) + P.x, c.n) === r;
}

/** One PCR bank's values by PCR index. */
export interface PcrBank {
  hash: number;
  values: Map<number, Buffer>;
}

/** The quote's pcrDigest for a selection: H(values in selection order), with the quote's hash. */
export function pcrDigest(hashAlg: number, selection: readonly PcrSelection[], banks: readonly PcrBank[]): Buffer {
  const h = hashAlgById(hashAlg);
  if (!h) throw new TpmVerifyError(`PCR digest hash ${algName(hashAlg)} is not supported`);
  const parts: Buffer[] = [];
  for (const sel of selection) {
    const bank = banks.find((b) => b.hash === sel.hash);
    for (const pcr of [...sel.pcrs].sort((a, b) => a - b)) {
      const v = bank?.values.get(pcr);
      if (!v) throw new TpmVerifyError(`PCR ${pcr} of bank ${algName(sel.hash)} is selected in the quote but no value was given`);
      parts.push(v);
    }
  }
  return digest(h, ...parts);
}

/**
 * TPMS_ATTEST as evidence: parsed as parseAttest does, except that a wrong magic is returned for
 * the caller to judge and name (like go-tpm's TPMGenerated.Check) instead of refused.
 */
export function decodeAttest(bytes: Uint8Array): TpmsAttest {
  if (bytes.length < 4) return parseAttest(bytes);
  const asGenerated = Buffer.from(bytes);
  const magic = asGenerated.readUInt32BE(0);
  asGenerated.writeUInt32BE(TPM_GENERATED_VALUE, 0);
  return { ...parseAttest(asGenerated), magic };
}

export interface QuoteCheck {
  attest: TpmsAttest;
  /** Present when PCR values were given: they hash to the quote's pcrDigest. */
  pcrDigest?: Buffer;
}

/**
 * Verifies a quote: signature by the AK, attestation type, nonce (extraData), and, when PCR
 * values are given, that they hash to the quoted digest. Throws TpmVerifyError naming what failed.
 */
export function verifyQuote(opts: {
  ak: TpmtPublic | KeyObject;
  attest: Uint8Array;
  signature: TpmtSignature | Uint8Array;
  nonce?: Uint8Array;
  pcrs?: readonly PcrBank[];
}): QuoteCheck {
  const attest = parseAttest(opts.attest);
  if (attest.attested.kind !== 'quote') throw new TpmVerifyError(`attestation is a ${attest.attested.kind}, not a quote`);
  const sig = opts.signature instanceof Uint8Array ? parseSignature(opts.signature) : opts.signature;
  if (!verifySignature(opts.ak, opts.attest, sig)) throw new TpmVerifyError('quote signature does not verify with the attestation key');
  if (opts.nonce && !Buffer.from(opts.nonce).equals(attest.extraData)) {
    throw new TpmVerifyError(`quote nonce (extraData ${attest.extraData.toString('hex')}) differs from the expected ${Buffer.from(opts.nonce).toString('hex')}`);
  }
  const out: QuoteCheck = { attest };
  if (opts.pcrs) {
    const hash = 'hash' in sig ? sig.hash : TPM_ALG.SHA256;
    const d = pcrDigest(hash, attest.attested.pcrSelect, opts.pcrs);
    if (!d.equals(attest.attested.pcrDigest)) throw new TpmVerifyError(`PCR values hash to ${d.toString('hex')}, the quote says ${attest.attested.pcrDigest.toString('hex')}`);
    out.pcrDigest = d;
  }
  return out;
}

// ---------------------------------------------------------------- tpm2-tools serialized PCR file

const SER_SELECTIONS = 16;
const SER_SELECT_BYTES = 4;
const SER_SELECTION_SIZE = 8; // u16 hash, u8 sizeofSelect, u8[4], 1 byte padding
const SER_PCRSEL_SIZE = 4 + SER_SELECTIONS * SER_SELECTION_SIZE; // 132
const SER_DIGESTS = 8;
const SER_DIGEST_SIZE = 2 + 64; // TPM2B_DIGEST
const SER_DIGESTLIST_SIZE = 4 + SER_DIGESTS * SER_DIGEST_SIZE; // 532

/**
 * Writes PCRs in tpm2-tools' "serialized" format (`tpm2_pcrread -o`, `tpm2_checkquote -f`):
 * a little-endian memory dump of TPML_PCR_SELECTION, a u32 count and that many TPML_DIGEST
 * of up to 8 digests, values in selection order.
 */
export function writePcrsSerialized(selection: readonly PcrSelection[], banks: readonly PcrBank[]): Buffer {
  if (selection.length > SER_SELECTIONS) throw new TpmVerifyError(`${selection.length} PCR banks exceed the 16 of the serialized format`);
  const sel = Buffer.alloc(SER_PCRSEL_SIZE);
  sel.writeUInt32LE(selection.length, 0);
  const values: Buffer[] = [];
  selection.forEach((s, i) => {
    const off = 4 + i * SER_SELECTION_SIZE;
    const bits = Buffer.alloc(SER_SELECT_BYTES);
    for (const p of s.pcrs) {
      if (p >= SER_SELECT_BYTES * 8) throw new TpmVerifyError(`PCR ${p} does not fit the serialized format`);
      bits[p >> 3]! |= 1 << (p & 7);
    }
    sel.writeUInt16LE(s.hash, off);
    sel.writeUInt8(Math.max(3, s.sizeofSelect ?? 3), off + 2);
    bits.copy(sel, off + 3);
    const bank = banks.find((b) => b.hash === s.hash);
    for (const p of [...s.pcrs].sort((a, b) => a - b)) {
      const v = bank?.values.get(p);
      if (!v) throw new TpmVerifyError(`PCR ${p} of bank ${algName(s.hash)} has no value`);
      values.push(v);
    }
  });
  const lists = Math.ceil(values.length / SER_DIGESTS);
  const out = Buffer.alloc(SER_PCRSEL_SIZE + 4 + lists * SER_DIGESTLIST_SIZE);
  out.set(sel, 0);
  out.writeUInt32LE(lists, SER_PCRSEL_SIZE);
  for (let l = 0; l < lists; l++) {
    const base = SER_PCRSEL_SIZE + 4 + l * SER_DIGESTLIST_SIZE;
    const chunk = values.slice(l * SER_DIGESTS, (l + 1) * SER_DIGESTS);
    out.writeUInt32LE(chunk.length, base);
    chunk.forEach((v, i) => {
      const d = base + 4 + i * SER_DIGEST_SIZE;
      out.writeUInt16LE(v.length, d);
      v.copy(out, d + 2);
    });
  }
  return out;
}

/** Reads tpm2-tools' serialized PCR format back into a selection and bank values. */
export function readPcrsSerialized(buf: Buffer): { selection: PcrSelection[]; banks: PcrBank[] } {
  const fail = (at: number, why: string): never => {
    throw new TpmProtocolError(`serialized PCR file: byte ${at}: ${why}`);
  };
  if (buf.length < SER_PCRSEL_SIZE + 4) fail(0, `${buf.length} bytes is shorter than the ${SER_PCRSEL_SIZE + 4}-byte header`);
  const count = buf.readUInt32LE(0);
  if (count > SER_SELECTIONS) fail(0, `selection count ${count} exceeds 16`);
  const selection: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const off = 4 + i * SER_SELECTION_SIZE;
    const size = buf.readUInt8(off + 2);
    if (size > SER_SELECT_BYTES) fail(off + 2, `sizeofSelect ${size} exceeds 4`);
    const pcrs: number[] = [];
    for (let p = 0; p < size * 8; p++) if (buf[off + 3 + (p >> 3)]! & (1 << (p & 7))) pcrs.push(p);
    selection.push({ hash: buf.readUInt16LE(off), pcrs, sizeofSelect: size });
  }
  const lists = buf.readUInt32LE(SER_PCRSEL_SIZE);
  if (buf.length !== SER_PCRSEL_SIZE + 4 + lists * SER_DIGESTLIST_SIZE) fail(SER_PCRSEL_SIZE, `${lists} digest list(s) need ${SER_PCRSEL_SIZE + 4 + lists * SER_DIGESTLIST_SIZE} bytes, file has ${buf.length}`);
  const values: Buffer[] = [];
  for (let l = 0; l < lists; l++) {
    const base = SER_PCRSEL_SIZE + 4 + l * SER_DIGESTLIST_SIZE;
    const n = buf.readUInt32LE(base);
    if (n > SER_DIGESTS) fail(base, `digest count ${n} exceeds 8`);
    for (let i = 0; i < n; i++) {
      const d = base + 4 + i * SER_DIGEST_SIZE;
      const size = buf.readUInt16LE(d);
      if (size > 64) fail(d, `digest size ${size} exceeds 64`);
      values.push(Buffer.from(buf.subarray(d + 2, d + 2 + size)));
    }
  }
  const banks: PcrBank[] = [];
  let k = 0;
  for (const s of selection) {
    const bank: PcrBank = banks.find((b) => b.hash === s.hash) ?? { hash: s.hash, values: new Map() };
    if (!banks.includes(bank)) banks.push(bank);
    const size = hashAlgById(s.hash)?.size;
    for (const p of s.pcrs) {
      const v = values[k++];
      if (!v) fail(SER_PCRSEL_SIZE, `fewer digests than selected PCRs (${k - 1})`);
      if (size !== undefined && v.length !== size) fail(SER_PCRSEL_SIZE, `PCR ${p} of bank ${algName(s.hash)} has ${v.length} bytes, expected ${size}`);
      bank.values.set(p, v);
    }
  }
  if (k !== values.length) fail(SER_PCRSEL_SIZE, `${values.length - k} digest(s) beyond the selected PCRs`);
  return { selection, banks };
}
