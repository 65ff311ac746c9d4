import { randomBytes } from 'node:crypto';
import {
  type Sm2PrivateKey,
  type Sm2PublicKey,
  sm2GenerateKey,
  sm2PublicKeyFromBytes,
  sm2PublicKeyToBytes,
  sm2Sign,
  sm2SignatureFromRaw,
  sm2SignatureToRaw,
  sm2Verify,
} from '../../crypto/sm2.js';
import { EXIT } from '../../errors.js';
import { BackendError } from './errors.js';

/**
 * The CSV platform certificate chain HRK → HSK → CEK → PEK, in a simple binary format of this
 * project ("HECC", documented below). It is NOT Hygon's certificate byte format; only the chain
 * shape, the key roles and the algorithm (SM2 with ID 1234567812345678 over SM3) follow CSV.
 *
 *   off  size  field
 *   0    4     magic "HECC"
 *   4    2     version (1), u16 LE
 *   6    2     usage (KEY_USAGE), u16 LE
 *   8    16    subject: chip id (CEK/PEK) or vendor key id (HRK/HSK)
 *   24   65    SM2 public key 04 ‖ x ‖ y
 *   89   2     issuer usage, u16 LE
 *   91   64    SM2 signature r ‖ s by the issuer over bytes 0..90 (default ID)
 *   155        total
 */

export const CERT_SIZE = 155;
const SIGNED = 91;
export const KEY_USAGE = { HRK: 0x0000, HSK: 0x0013, CEK: 0x1004, PEK: 0x1002 } as const;
export type CertRole = keyof typeof KEY_USAGE;
const ROLE_OF: Record<number, CertRole> = { 0x0000: 'HRK', 0x0013: 'HSK', 0x1004: 'CEK', 0x1002: 'PEK' };
const ISSUER: Record<CertRole, CertRole> = { HRK: 'HRK', HSK: 'HRK', CEK: 'HSK', PEK: 'CEK' };

export interface CsvCert {
  role: CertRole;
  subject: Buffer;
  publicKey: Sm2PublicKey;
  issuerRole: CertRole;
  raw: Buffer;
}

export class CsvCertError extends BackendError {
  constructor(message: string) {
    super(message, EXIT.VERIFY_FAILED);
  }
}

export function makeCsvCert(role: CertRole, subject: Uint8Array, publicKey: Sm2PublicKey, issuerKey: Sm2PrivateKey): Buffer {
  if (subject.length !== 16) throw new BackendError(`CSV cert subject must be 16 bytes, got ${subject.length}`);
  const b = Buffer.alloc(CERT_SIZE);
  b.write('HECC', 0, 'latin1');
  b.writeUInt16LE(1, 4);
  b.writeUInt16LE(KEY_USAGE[role], 6);
  Buffer.from(subject).copy(b, 8);
  sm2PublicKeyToBytes(publicKey).copy(b, 24);
  b.writeUInt16LE(KEY_USAGE[ISSUER[role]], 89);
  sm2SignatureToRaw(sm2Sign(issuerKey, b.subarray(0, SIGNED))).copy(b, SIGNED);
  return b;
}

export function parseCsvCert(raw: Uint8Array, what = 'CSV cert'): CsvCert {
  const b = Buffer.from(raw);
  if (b.length !== CERT_SIZE) throw new CsvCertError(`${what}: ${b.length} bytes, expected ${CERT_SIZE}`);
  if (b.toString('latin1', 0, 4) !== 'HECC') throw new CsvCertError(`${what}: bad magic at byte 0`);
  if (b.readUInt16LE(4) !== 1) throw new CsvCertError(`${what}: unsupported version ${b.readUInt16LE(4)} at byte 4`);
  const role = ROLE_OF[b.readUInt16LE(6)];
  if (!role) throw new CsvCertError(`${what}: unknown key usage 0x${b.readUInt16LE(6).toString(16)} at byte 6`);
  const issuerRole = ROLE_OF[b.readUInt16LE(89)];
  if (!issuerRole) throw new CsvCertError(`${what}: unknown issuer usage 0x${b.readUInt16LE(89).toString(16)} at byte 89`);
  let publicKey: Sm2PublicKey;
  try {
    publicKey = sm2PublicKeyFromBytes(b.subarray(24, 89));
  } catch (e) {
    throw new CsvCertError(`${what}: public key at byte 24: ${(e as Error).message}`);
  }
  return { role, subject: Buffer.from(b.subarray(8, 24)), publicKey, issuerRole, raw: b };
}

function checkSignature(cert: CsvCert, issuer: Sm2PublicKey, what: string): void {
  const sig = sm2SignatureFromRaw(cert.raw.subarray(SIGNED));
  if (!sm2Verify(issuer, cert.raw.subarray(0, SIGNED), sig)) throw new CsvCertError(`${what}: SM2 signature at byte ${SIGNED} does not verify with the ${cert.issuerRole} key`);
}

export interface CsvChain {
  hrk: Buffer;
  hsk: Buffer;
  cek: Buffer;
  pek: Buffer;
}

/** Verifies HRK (self-signed, optionally pinned) → HSK → CEK → PEK; returns the PEK certificate. */
export function verifyCsvChain(chain: CsvChain, trustedHrk?: Sm2PublicKey): CsvCert {
  const certs = (['hrk', 'hsk', 'cek', 'pek'] as const).map((k) => parseCsvCert(chain[k], `${k.toUpperCase()} cert`));
  const roles: CertRole[] = ['HRK', 'HSK', 'CEK', 'PEK'];
  certs.forEach((c, i) => {
    if (c.role !== roles[i]) throw new CsvCertError(`${roles[i]} cert: has usage ${c.role}`);
    if (c.issuerRole !== ISSUER[c.role]) throw new CsvCertError(`${c.role} cert: issuer ${c.issuerRole}, expected ${ISSUER[c.role]}`);
  });
  const [hrk, hsk, cek, pek] = certs as [CsvCert, CsvCert, CsvCert, CsvCert];
  if (trustedHrk && (trustedHrk.point.x !== hrk.publicKey.point.x || trustedHrk.point.y !== hrk.publicKey.point.y))
    throw new CsvCertError('HRK cert: public key is not the trusted root');
  checkSignature(hrk, hrk.publicKey, 'HRK cert');
  checkSignature(hsk, hrk.publicKey, 'HSK cert');
  checkSignature(cek, hsk.publicKey, 'CEK cert');
  if (!cek.subject.equals(pek.subject)) throw new CsvCertError('PEK cert: chip id differs from the CEK cert');
  checkSignature(pek, cek.publicKey, 'PEK cert');
  return pek;
}

/** A vendor root/signing key pair (HRK/HSK), as the model's "Hygon" side. */
export interface CsvVendor {
  hrk: Sm2PrivateKey;
  hsk: Sm2PrivateKey;
  hrkCert: Buffer;
  hskCert: Buffer;
}

export function makeCsvVendor(): CsvVendor {
  const hrk = sm2GenerateKey();
  const hsk = sm2GenerateKey();
  const id = Buffer.alloc(16);
  id.write('HRK-model', 'latin1');
  const hid = Buffer.alloc(16);
  hid.write('HSK-model', 'latin1');
  return { hrk, hsk, hrkCert: makeCsvCert('HRK', id, hrk.publicKey, hrk), hskCert: makeCsvCert('HSK', hid, hsk.publicKey, hrk) };
}

/** A chip's identity: CEK (certified by the vendor's HSK) and PEK (certified by the CEK). */
export interface CsvChipIdentity {
  chipId: Buffer;
  cek: Sm2PrivateKey;
  pek: Sm2PrivateKey;
  chain: CsvChain;
}

export function makeCsvChip(vendor: CsvVendor, chipId: Uint8Array = randomBytes(16)): CsvChipIdentity {
  const cek = sm2GenerateKey();
  const pek = sm2GenerateKey();
  const cekCert = makeCsvCert('CEK', chipId, cek.publicKey, vendor.hsk);
  const pekCert = makeCsvCert('PEK', chipId, pek.publicKey, cek);
  return { chipId: Buffer.from(chipId), cek, pek, chain: { hrk: vendor.hrkCert, hsk: vendor.hskCert, cek: cekCert, pek: pekCert } };
}
