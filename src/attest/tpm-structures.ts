/**
 * The few TPM 2.0 structures the verifier reads (TPMS_ATTEST of a quote, TPMT_SIGNATURE,
 * TPMT_PUBLIC of an AK), bound-checked, read-only. Verifier-side only: the attester's
 * marshaling lives in src/tpm.
 */
import { constants, createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { TPM_ALG, hashAlgById, algName } from '../tpm/alg.js';
import { AttestError } from './errors.js';
import { sm2VerifyDigest } from './sm2.js';

export const TPM_GENERATED_VALUE = 0xff544347;
export const TPM_ST_ATTEST_QUOTE = 0x8018;

class Reader {
  off = 0;
  constructor(readonly buf: Buffer, readonly what: string) {}
  need(n: number, field: string): void {
    if (this.off + n > this.buf.length) throw new AttestError(`${this.what}: truncated at byte ${this.off} reading ${field} (${n} bytes, ${this.buf.length - this.off} left)`);
  }
  u8(f: string): number {
    this.need(1, f);
    return this.buf.readUInt8(this.off++);
  }
  u16(f: string): number {
    this.need(2, f);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(f: string): number {
    this.need(4, f);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(f: string): bigint {
    this.need(8, f);
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return v;
  }
  bytes(n: number, f: string): Buffer {
    this.need(n, f);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  tpm2b(f: string, max = 4096): Buffer {
    const at = this.off;
    const n = this.u16(`${f}.size`);
    if (n > max) throw new AttestError(`${this.what}: ${f} size ${n} at byte ${at} exceeds ${max}`);
    return this.bytes(n, f);
  }
  end(): void {
    if (this.off !== this.buf.length) throw new AttestError(`${this.what}: ${this.buf.length - this.off} trailing byte(s) at byte ${this.off}`);
  }
}

export interface PcrSelection {
  hashAlg: number;
  pcrs: number[];
}

export interface ParsedQuote {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  selection: PcrSelection[];
  pcrDigest: Buffer;
}

function readSelection(r: Reader): PcrSelection[] {
  const at = r.off;
  const count = r.u32('pcrSelect.count');
  if (count > 16) throw new AttestError(`${r.what}: pcrSelect.count ${count} at byte ${at} exceeds 16`);
  const out: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hashAlg = r.u16(`pcrSelect[${i}].hash`);
    const size = r.u8(`pcrSelect[${i}].sizeofSelect`);
    if (size > 4) throw new AttestError(`${r.what}: pcrSelect[${i}].sizeofSelect ${size} exceeds 4`);
    const bits = r.bytes(size, `pcrSelect[${i}].pcrSelect`);
    const pcrs: number[] = [];
    for (let b = 0; b < size * 8; b++) if (bits[b >> 3]! & (1 << (b & 7))) pcrs.push(b);
    out.push({ hashAlg, pcrs });
  }
  return out;
}

/** TPMS_ATTEST of a quote. Magic and type are returned, not enforced, so the verifier can name them. */
export function parseQuoteAttest(buf: Buffer): ParsedQuote {
  const r = new Reader(buf, 'TPMS_ATTEST');
  const magic = r.u32('magic');
  const type = r.u16('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', 68);
  const extraData = r.tpm2b('extraData', 64);
  const clock = r.u64('clockInfo.clock');
  const resetCount = r.u32('clockInfo.resetCount');
  const restartCount = r.u32('clockInfo.restartCount');
  const safe = r.u8('clockInfo.safe') !== 0;
  const firmwareVersion = r.u64('firmwareVersion');
  if (type !== TPM_ST_ATTEST_QUOTE) return { magic, type, qualifiedSigner, extraData, clock, resetCount, restartCount, safe, firmwareVersion, selection: [], pcrDigest: Buffer.alloc(0) };
  const selection = readSelection(r);
  const pcrDigest = r.tpm2b('pcrDigest', 64);
  r.end();
  return { magic, type, qualifiedSigner, extraData, clock, resetCount, restartCount, safe, firmwareVersion, selection, pcrDigest };
}

export interface ParsedSignature {
  sigAlg: number;
  hashAlg: number;
  rsa?: Buffer;
  r?: Buffer;
  s?: Buffer;
}

export function parseSignature(buf: Buffer): ParsedSignature {
  const r = new Reader(buf, 'TPMT_SIGNATURE');
  const sigAlg = r.u16('sigAlg');
  if (sigAlg === TPM_ALG.NULL) throw new AttestError('TPMT_SIGNATURE: sigAlg is TPM_ALG_NULL (unsigned)');
  const hashAlg = r.u16('hash');
  let out: ParsedSignature;
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) out = { sigAlg, hashAlg, rsa: r.tpm2b('sig', 1024) };
  else if (sigAlg === TPM_ALG.ECDSA || sigAlg === TPM_ALG.SM2 || sigAlg === TPM_ALG.ECSCHNORR) out = { sigAlg, hashAlg, r: r.tpm2b('signatureR', 128), s: r.tpm2b('signatureS', 128) };
  else throw new AttestError(`TPMT_SIGNATURE: unsupported sigAlg ${algName(sigAlg)}`);
  r.end();
  return out;
}

const TPM_ECC_SM2_P256 = 0x0020;
/** DER SubjectPublicKeyInfo header for an uncompressed SM2 point (id-ecPublicKey, curve 1.2.156.10197.1.301). */
const SM2_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a811ccf5501822d034200', 'hex');

const CURVES: Record<number, { crv: string; size: number }> = {
  0x0003: { crv: 'P-256', size: 32 },
  0x0004: { crv: 'P-384', size: 48 },
  0x0005: { crv: 'P-521', size: 66 },
};

export interface ParsedPublic {
  type: number;
  nameAlg: number;
  attributes: number;
  schemeAlg: number;
  schemeHash: number;
  key: KeyObject;
  curveId?: number;
  /** SM2 public point (32-byte x, y) when curveId is TPM_ECC_SM2_P256. */
  sm2Point?: { x: Buffer; y: Buffer };
  /** Symmetric definition of a storage key (EK): e.g. AES-128-CFB. */
  symmetric?: { alg: number; keyBits: number; mode: number };
}

function importKey(fn: () => KeyObject, what: string): KeyObject {
  try {
    return fn();
  } catch (e) {
    throw new AttestError(`TPMT_PUBLIC: ${what} is not a valid public key (${(e as Error).message.split('\n')[0]})`);
  }
}

/** TPMT_PUBLIC (or TPM2B_PUBLIC: a leading u16 size equal to the rest) of an RSA or ECC key. */
export function parsePublic(input: Buffer): { pub: ParsedPublic; tpmt: Buffer } {
  let buf = input;
  if (buf.length >= 2 && buf.readUInt16BE(0) === buf.length - 2) buf = buf.subarray(2);
  const r = new Reader(buf, 'TPMT_PUBLIC');
  const type = r.u16('type');
  const nameAlg = r.u16('nameAlg');
  const attributes = r.u32('objectAttributes');
  r.tpm2b('authPolicy', 64);
  const symAlg = r.u16('parameters.symmetric.algorithm');
  let symmetric: ParsedPublic['symmetric'];
  if (symAlg !== TPM_ALG.NULL) {
    const keyBits = r.u16('parameters.symmetric.keyBits');
    const mode = r.u16('parameters.symmetric.mode');
    symmetric = { alg: symAlg, keyBits, mode };
  }
  const schemeAlg = r.u16('parameters.scheme.scheme');
  const schemeHash = schemeAlg !== TPM_ALG.NULL ? r.u16('parameters.scheme.hashAlg') : TPM_ALG.NULL;
  let key: KeyObject;
  let curveId: number | undefined;
  let sm2Point: { x: Buffer; y: Buffer } | undefined;
  if (type === TPM_ALG.RSA) {
    r.u16('parameters.keyBits');
    const exp = r.u32('parameters.exponent') || 65537;
    const n = r.tpm2b('unique.rsa', 1024);
    const e = Buffer.alloc(4);
    e.writeUInt32BE(exp);
    key = importKey(() => createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.subarray(e.findIndex((b) => b !== 0)).toString('base64url') }, format: 'jwk' }), 'RSA modulus');
  } else if (type === TPM_ALG.ECC) {
    curveId = r.u16('parameters.curveID');
    const kdf = r.u16('parameters.kdf.scheme');
    if (kdf !== TPM_ALG.NULL) r.u16('parameters.kdf.hashAlg');
    const x = r.tpm2b('unique.ecc.x', 128);
    const y = r.tpm2b('unique.ecc.y', 128);
    if (curveId === TPM_ECC_SM2_P256) {
      const pad32 = (b: Buffer): Buffer => (b.length >= 32 ? b : Buffer.concat([Buffer.alloc(32 - b.length), b]));
      sm2Point = { x: pad32(x), y: pad32(y) };
      key = importKey(() => createPublicKey({ key: Buffer.concat([SM2_SPKI_PREFIX, Buffer.from([4]), sm2Point!.x, sm2Point!.y]), format: 'der', type: 'spki' }), 'SM2 point');
      r.end();
      return { pub: { type, nameAlg, attributes, schemeAlg, schemeHash, key, curveId, sm2Point, ...(symmetric ? { symmetric } : {}) }, tpmt: buf };
    }
    const curve = CURVES[curveId];
    if (!curve) throw new AttestError(`TPMT_PUBLIC: ECC curve 0x${curveId.toString(16)} is not supported (P-256, P-384, P-521, SM2)`, 5);
    const pad = (b: Buffer): Buffer => (b.length >= curve.size ? b : Buffer.concat([Buffer.alloc(curve.size - b.length), b]));
    key = importKey(() => createPublicKey({ key: { kty: 'EC', crv: curve.crv, x: pad(x).toString('base64url'), y: pad(y).toString('base64url') }, format: 'jwk' }), `${curve.crv} point`);
  } else throw new AttestError(`TPMT_PUBLIC: key type ${algName(type)} is not a signing key type (rsa, ecc)`);
  r.end();
  return { pub: { type, nameAlg, attributes, schemeAlg, schemeHash, key, ...(curveId !== undefined ? { curveId } : {}), ...(symmetric ? { symmetric } : {}) }, tpmt: buf };
}

/** Object Name = nameAlg (u16) ‖ H_nameAlg(TPMT_PUBLIC). */
export function akNameOf(publicArea: Buffer): Buffer {
  const { pub, tpmt } = parsePublic(publicArea);
  const alg = hashAlgById(pub.nameAlg);
  if (!alg) throw new AttestError(`TPMT_PUBLIC: unknown nameAlg ${algName(pub.nameAlg)}`);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(pub.nameAlg);
  return Buffer.concat([head, createHash(alg.nodeName).update(tpmt).digest()]);
}

export interface AkKey {
  key: KeyObject;
  /** e.g. "ecdsa P-256" / "rsa 2048". */
  description: string;
  /** Default hash of the key's scheme (sha256 when the key has none). */
  hashName: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, hex. */
  spkiSha256: string;
  /** TPM Name (hex) when the TPMT_PUBLIC is known. */
  name?: string;
  /** SM2 public point, for SM2 signatures. */
  sm2Point?: { x: Buffer; y: Buffer };
}

/**
 * The AK as the verifier uses it. With both TPMT_PUBLIC and PEM, they must be the same key
 * (the Name used for enrollment comes from TPMT_PUBLIC, the signature check from the same key).
 */
export function akKeyFromInput(ak: { tpmtPublic?: Buffer; pem?: string }): AkKey {
  // Verifiers see the same few AKs again and again; importing a key costs ~100 µs.
  const cacheKey = `${ak.tpmtPublic?.toString('base64') ?? ''}|${ak.pem ?? ''}`;
  const hit = akCache.get(cacheKey);
  if (hit) return hit;
  const out = akKeyUncached(ak);
  if (akCache.size >= 4096) akCache.delete(akCache.keys().next().value!);
  akCache.set(cacheKey, out);
  return out;
}

const akCache = new Map<string, AkKey>();

function akKeyUncached(ak: { tpmtPublic?: Buffer; pem?: string }): AkKey {
  let key: KeyObject | undefined;
  let hashName = 'sha256';
  let sm2Point: { x: Buffer; y: Buffer } | undefined;
  if (ak.tpmtPublic) {
    const { pub } = parsePublic(ak.tpmtPublic);
    key = pub.key;
    sm2Point = pub.sm2Point;
    if (pub.schemeHash !== TPM_ALG.NULL) hashName = hashAlgById(pub.schemeHash)?.name ?? hashName;
  }
  if (ak.pem) {
    let fromPem: KeyObject;
    try {
      fromPem = createPublicKey(ak.pem);
    } catch (e) {
      throw new AttestError(`AK PEM: not a public key (${(e as Error).message.split('\n')[0]})`);
    }
    if (key && !key.equals(fromPem)) throw new AttestError('AK PEM and TPMT_PUBLIC are different keys');
    key ??= fromPem;
  }
  if (!key) throw new AttestError('no AK public key (TPMT_PUBLIC or PEM) supplied');
  const d = key.asymmetricKeyDetails ?? {};
  const description = sm2Point ? 'sm2 SM2-P256' : key.asymmetricKeyType === 'ec' ? `ecdsa ${d.namedCurve === 'prime256v1' ? 'P-256' : d.namedCurve === 'secp384r1' ? 'P-384' : d.namedCurve}` : `${key.asymmetricKeyType} ${d.modulusLength ?? ''}`.trim();
  const spkiSha256 = createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
  const name = ak.tpmtPublic ? akNameOf(ak.tpmtPublic).toString('hex') : undefined;
  return { key, description, hashName, spkiSha256, ...(name ? { name } : {}), ...(sm2Point ? { sm2Point } : {}) };
}

export interface SignatureCheck {
  ok: boolean;
  scheme: string;
  hashName: string;
  reason: string;
}

/** Verifies a TPMT_SIGNATURE over TPMS_ATTEST bytes with the AK; never throws. */
export function verifyQuoteSignature(attest: Buffer, signature: Buffer, ak: AkKey): SignatureCheck {
  let sig: ParsedSignature;
  try {
    sig = parseSignature(signature);
  } catch (e) {
    return { ok: false, scheme: 'unknown', hashName: '', reason: (e as Error).message };
  }
  const hash = hashAlgById(sig.hashAlg);
  const scheme = algName(sig.sigAlg);
  if (!hash) return { ok: false, scheme, hashName: '', reason: `signature hash ${algName(sig.hashAlg)} unknown` };
  const keyType = ak.key.asymmetricKeyType;
  try {
    let ok: boolean;
    if (sig.sigAlg === TPM_ALG.RSASSA || sig.sigAlg === TPM_ALG.RSAPSS) {
      if (keyType !== 'rsa') return { ok: false, scheme, hashName: hash.name, reason: `${scheme} signature but the AK is ${keyType}` };
      ok = cryptoVerify(hash.nodeName, attest, sig.sigAlg === TPM_ALG.RSAPSS ? { key: ak.key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO } : { key: ak.key, padding: constants.RSA_PKCS1_PADDING }, sig.rsa!);
    } else if (sig.sigAlg === TPM_ALG.ECDSA) {
      if (keyType !== 'ec') return { ok: false, scheme, hashName: hash.name, reason: `ecdsa signature but the AK is ${keyType}` };
      const size = ak.key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 48 : ak.key.asymmetricKeyDetails?.namedCurve === 'secp521r1' ? 66 : 32;
      const fix = (b: Buffer): Buffer | undefined => {
        let v = b;
        while (v.length > size && v[0] === 0) v = v.subarray(1);
        return v.length > size ? undefined : Buffer.concat([Buffer.alloc(size - v.length), v]);
      };
      const rr = fix(sig.r!);
      const ss = fix(sig.s!);
      if (!rr || !ss) return { ok: false, scheme, hashName: hash.name, reason: 'ecdsa r or s longer than the curve order' };
      ok = cryptoVerify(hash.nodeName, attest, { key: ak.key, dsaEncoding: 'ieee-p1363' }, Buffer.concat([rr, ss]));
    } else if (sig.sigAlg === TPM_ALG.SM2) {
      if (!ak.sm2Point) return { ok: false, scheme, hashName: hash.name, reason: 'sm2 signature but the AK is not an SM2 key (give the AK as TPMT_PUBLIC)' };
      // The TPM signs e = H(TPMS_ATTEST) as given (no Z_A).
      ok = sm2VerifyDigest(createHash(hash.nodeName).update(attest).digest(), sig.r!, sig.s!, ak.sm2Point.x, ak.sm2Point.y);
    } else {
      return { ok: false, scheme, hashName: hash.name, reason: `${scheme} signatures are not supported` };
    }
    return { ok, scheme, hashName: hash.name, reason: ok ? 'verifies' : `${scheme}/${hash.name} signature does not verify with the AK` };
  } catch (e) {
    return { ok: false, scheme, hashName: hash.name, reason: `${scheme} verification error: ${(e as Error).message.split('\n')[0]}` };
  }
}
