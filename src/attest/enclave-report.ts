import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { parseReport } from '../hypervisor/abi.js';
import type { EnclaveInput } from './verify.js';

export interface EnclaveIdentity {
  mrenclave?: string;
  mrsigner?: string;
  reportData?: string;
}

/** Turns a backend's report bytes into the identity the allow-lists judge. */
export type EnclaveReportDecoder = (report: Buffer) => EnclaveIdentity;

/** The hypervisor's REPORT (432 bytes, SGX layout) through src/hypervisor's ABI parser. */
export function decodeHypervisorReport(report: Buffer): EnclaveIdentity {
  const r = parseReport(report);
  return { mrenclave: r.mrenclave.toString('hex'), mrsigner: r.mrsigner.toString('hex'), reportData: r.reportData.toString('hex') };
}

const decoders = new Map<string, EnclaveReportDecoder>();
/** Lets a backend (src/enclave, hypervisor core) supply its own report layout. */
export function registerEnclaveReportDecoder(backend: string, fn: EnclaveReportDecoder): void {
  decoders.set(backend, fn);
}

const keyCache = new Map<string, KeyObject>();

/**
 * Checks one enclave report: signed by the hypervisor report key (ECDSA DER or r‖s, SHA-256 for
 * P-256, SHA-384 for P-384; Ed25519), decoded to MRENCLAVE/MRSIGNER, and any identity the
 * evidence states alongside equals the decoded one.
 */
export function verifyEnclaveReport(e: EnclaveInput, reportKeyPem: string | undefined): { ok: boolean; reason: string; identity: EnclaveIdentity } {
  let identity: EnclaveIdentity = {};
  try {
    identity = (decoders.get(e.backend) ?? decodeHypervisorReport)(e.report);
  } catch (err) {
    return { ok: false, reason: `report does not decode: ${(err as Error).message}`, identity };
  }
  if (e.mrenclave && e.mrenclave !== identity.mrenclave) return { ok: false, reason: 'stated MRENCLAVE differs from the one in the signed report', identity };
  if (e.mrsigner && e.mrsigner !== identity.mrsigner) return { ok: false, reason: 'stated MRSIGNER differs from the one in the signed report', identity };
  if (!reportKeyPem) return { ok: false, reason: 'no hypervisor report key', identity };
  if (!e.reportSignature) return { ok: false, reason: 'report has no signature', identity };
  let key = keyCache.get(reportKeyPem);
  if (!key) {
    try {
      key = createPublicKey(reportKeyPem);
    } catch {
      return { ok: false, reason: 'hypervisor report key is not a public key', identity };
    }
    keyCache.set(reportKeyPem, key);
  }
  let ok = false;
  try {
    if (key.asymmetricKeyType === 'ed25519') ok = cryptoVerify(null, e.report, key, e.reportSignature);
    else {
      const hash = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'sha384' : 'sha256';
      const size = hash === 'sha384' ? 96 : 64;
      ok = cryptoVerify(hash, e.report, e.reportSignature.length === size ? { key, dsaEncoding: 'ieee-p1363' } : key, e.reportSignature);
    }
  } catch {
    ok = false;
  }
  return ok ? { ok, reason: 'signed by the hypervisor key', identity } : { ok, reason: 'report signature does not verify with the hypervisor report key', identity };
}
