import { createHash, createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';
import { EXIT } from '../errors.js';
import { PAGE_SIZE, SECINFO, SIGSTRUCT_SIZE } from '../hypervisor/abi.js';
import { EnclaveError } from './errors.js';

/**
 * SGX measurement and signing structures in TypeScript, independent of the Rust core:
 * MRENCLAVE (ECREATE/EADD/EEXTEND records, docs/hypercall-abi.md), SIGSTRUCT (SDM vol. 3D
 * 34.13) signed with node's RSA, MRSIGNER = SHA-256(modulus little-endian).
 */

export class MrEnclaveBuilder {
  private readonly h = createHash('sha256');
  constructor(ssaFrameSize: number, size: bigint) {
    const r = Buffer.alloc(64);
    r.write('ECREATE\0', 0, 'latin1');
    r.writeUInt32LE(ssaFrameSize, 8);
    r.writeBigUInt64LE(size, 12);
    this.h.update(r);
  }
  eadd(offset: bigint, secinfoFlags: number): void {
    const r = Buffer.alloc(64);
    r.write('EADD\0\0\0\0', 0, 'latin1');
    r.writeBigUInt64LE(offset, 8);
    r.writeBigUInt64LE(BigInt(secinfoFlags), 16);
    this.h.update(r);
  }
  eextend(offset: bigint, chunk: Uint8Array): void {
    if (chunk.length !== 256) throw new EnclaveError(`EEXTEND chunk at offset 0x${offset.toString(16)} is ${chunk.length} bytes, need 256`, EXIT.BAD_INPUT);
    const r = Buffer.alloc(64);
    r.write('EEXTEND\0', 0, 'latin1');
    r.writeBigUInt64LE(offset, 8);
    this.h.update(r).update(chunk);
  }
  /** EADD + 16 × EEXTEND of one 4 KiB page. */
  addPageMeasured(offset: bigint, secinfoFlags: number, page: Uint8Array): void {
    this.eadd(offset, secinfoFlags);
    for (let i = 0; i < PAGE_SIZE; i += 256) this.eextend(offset + BigInt(i), page.subarray(i, i + 256));
  }
  digest(): Buffer {
    return this.h.copy().digest();
  }
}

export interface MeasuredPage {
  offset: bigint;
  flags: number;
  data: Uint8Array;
  /** EEXTEND this page (default true). */
  measured?: boolean;
}

export function computeMrEnclave(size: bigint, ssaFrameSize: number, pages: readonly MeasuredPage[]): Buffer {
  const m = new MrEnclaveBuilder(ssaFrameSize, size);
  for (const p of pages) {
    if (p.measured === false) m.eadd(p.offset, p.flags);
    else m.addPageMeasured(p.offset, p.flags, p.data);
  }
  return m.digest();
}

export const SIGSTRUCT_HEADER = Buffer.from([6, 0, 0, 0, 0xe1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
export const SIGSTRUCT_HEADER2 = Buffer.from([1, 1, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 1, 0, 0, 0]);
const RSA_BYTES = 384;

export interface SigstructBody {
  vendor?: number;
  /** BCD yyyymmdd. */
  date?: number;
  swDefined?: number;
  miscSelect?: number;
  miscMask?: number;
  attributes: bigint;
  xfrm: bigint;
  attributeMask?: bigint;
  xfrmMask?: bigint;
  enclaveHash: Uint8Array;
  isvProdId: number;
  isvSvn: number;
}

function beToBigInt(b: Uint8Array): bigint {
  return BigInt('0x' + (Buffer.from(b).toString('hex') || '0'));
}
function bigIntToLe(v: bigint, len: number): Buffer {
  const out = Buffer.alloc(len);
  for (let i = 0; i < len; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (v !== 0n) throw new EnclaveError(`value does not fit in ${len} bytes`);
  return out;
}

/** Loads an RSA-3072 e=3 signing key from PEM, refusing anything else with the reason. */
export function loadSignerKey(pem: string | Buffer, where = 'signer key'): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new EnclaveError(`${where}: not a PEM private key (${(e as Error).message})`, EXIT.BAD_INPUT);
  }
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType !== 'rsa' || d?.modulusLength !== 3072 || d.publicExponent !== 3n)
    throw new EnclaveError(`${where}: need RSA-3072 with e=3 for SIGSTRUCT, got ${key.asymmetricKeyType} ${d?.modulusLength ?? '?'} bits e=${d?.publicExponent ?? '?'}`, EXIT.BAD_INPUT);
  return key;
}

/** Big-endian modulus of an RSA key. */
export function rsaModulus(key: KeyObject): Buffer {
  const jwk = createPublicKey(key).export({ format: 'jwk' }) as { n: string };
  return Buffer.from(jwk.n, 'base64url');
}

/** MRSIGNER = SHA-256 of the modulus as SIGSTRUCT stores it (little-endian). */
export function mrsignerOf(key: KeyObject): Buffer {
  return createHash('sha256').update(Buffer.from(rsaModulus(key)).reverse()).digest();
}

/** Builds and signs a SIGSTRUCT (RSA-3072, e=3, PKCS#1 v1.5 SHA-256), with Q1/Q2 as EINIT needs. */
export function buildSigstruct(body: SigstructBody, key: KeyObject): Buffer {
  if (body.enclaveHash.length !== 32) throw new EnclaveError(`SIGSTRUCT.ENCLAVEHASH: ${body.enclaveHash.length} bytes, need 32`, EXIT.BAD_INPUT);
  const raw = Buffer.alloc(SIGSTRUCT_SIZE);
  SIGSTRUCT_HEADER.copy(raw, 0);
  raw.writeUInt32LE(body.vendor ?? 0, 16);
  raw.writeUInt32LE(body.date ?? 0, 20);
  SIGSTRUCT_HEADER2.copy(raw, 24);
  raw.writeUInt32LE(body.swDefined ?? 0, 40);
  raw.writeUInt32LE(3, 512);
  raw.writeUInt32LE(body.miscSelect ?? 0, 900);
  raw.writeUInt32LE(body.miscMask ?? 0xffff_ffff, 904);
  raw.writeBigUInt64LE(body.attributes, 928);
  raw.writeBigUInt64LE(body.xfrm, 936);
  raw.writeBigUInt64LE(body.attributeMask ?? 0xffff_ffff_ffff_ffffn, 944);
  raw.writeBigUInt64LE(body.xfrmMask ?? 0n, 952);
  raw.set(body.enclaveHash, 960);
  raw.writeUInt16LE(body.isvProdId, 1024);
  raw.writeUInt16LE(body.isvSvn, 1026);
  const message = Buffer.concat([raw.subarray(0, 128), raw.subarray(900, 1028)]);
  const sigBe = sign('sha256', message, key);
  const modBe = rsaModulus(key);
  if (sigBe.length !== RSA_BYTES || modBe.length !== RSA_BYTES) throw new EnclaveError(`SIGSTRUCT: signer key is not RSA-3072`, EXIT.BAD_INPUT);
  const s = beToBigInt(sigBe);
  const n = beToBigInt(modBe);
  const q1 = (s * s) / n;
  const q2 = (s * s * s - q1 * s * n) / n;
  Buffer.from(modBe).reverse().copy(raw, 128);
  Buffer.from(sigBe).reverse().copy(raw, 516);
  bigIntToLe(q1, RSA_BYTES).copy(raw, 1040);
  bigIntToLe(q2, RSA_BYTES).copy(raw, 1424);
  return raw;
}

/** Checks a SIGSTRUCT's RSA signature (s^3 mod n vs PKCS#1 v1.5 of SHA-256 of the signed bytes). */
export function verifySigstruct(raw: Uint8Array): { mrsigner: Buffer; enclaveHash: Buffer } {
  const b = Buffer.from(raw);
  if (b.length !== SIGSTRUCT_SIZE) throw new EnclaveError(`SIGSTRUCT: ${b.length} bytes, need ${SIGSTRUCT_SIZE}`, EXIT.BAD_INPUT);
  if (!b.subarray(0, 16).equals(SIGSTRUCT_HEADER)) throw new EnclaveError('SIGSTRUCT.HEADER (byte 0) is invalid', EXIT.BAD_INPUT);
  if (b.readUInt32LE(512) !== 3) throw new EnclaveError('SIGSTRUCT.EXPONENT (byte 512) must be 3', EXIT.BAD_INPUT);
  const n = beToBigInt(Buffer.from(b.subarray(128, 512)).reverse());
  const s = beToBigInt(Buffer.from(b.subarray(516, 900)).reverse());
  const em = (s * s * s) % n;
  const digest = createHash('sha256').update(b.subarray(0, 128)).update(b.subarray(900, 1028)).digest();
  const prefix = Buffer.from('3031300d060960864801650304020105000420', 'hex');
  const t = Buffer.concat([prefix, digest]);
  const expected = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(RSA_BYTES - 3 - t.length, 0xff), Buffer.from([0]), t]);
  if (em !== beToBigInt(expected)) throw new EnclaveError('SIGSTRUCT RSA signature does not verify', EXIT.VERIFY_FAILED);
  return { mrsigner: createHash('sha256').update(b.subarray(128, 512)).digest(), enclaveHash: Buffer.from(b.subarray(960, 992)) };
}

export const secinfoReg = (r: boolean, w: boolean, x: boolean): number => SECINFO.PT_REG | (r ? SECINFO.R : 0) | (w ? SECINFO.W : 0) | (x ? SECINFO.X : 0);
export const SECINFO_TCS = SECINFO.PT_TCS;
