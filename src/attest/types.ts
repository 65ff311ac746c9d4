/**
 * Types the verifier's modules share (evidence in any format, enrollment and clock records): kept
 * apart from the code that produces or checks them so that the modules depend on them, not on
 * each other.
 */
import type { BankName } from './policy.js';

/** Which event log: firmware (PCR 0-7), runtime (hypervisor, PCR 8-16, 23), DRTM (PCR 17-22). */
export type LogKind = 'firmware' | 'runtime' | 'drtm';

/** PCR values: bank -> index -> value. */
export type PcrValues = Map<BankName, Map<number, Buffer>>;

export interface QuoteInput {
  attest: Buffer;
  signature: Buffer;
  /** Values of every PCR in this quote's selection (possibly several banks for tpm2-tools quotes). */
  pcrs: PcrValues;
}

export interface EnclaveInput {
  id?: string;
  backend: string;
  /** The hypervisor's enclave quote (496 B, CONTRACT-12). */
  quote: Buffer;
  /** What the enclave bound with the nonce: REPORTDATA[0..32] = SHA-256(nonce ‖ userData). */
  userData: Buffer;
  launchMeasurement?: Buffer;
  /** Firmware launch inputs (apiMajor, apiMinor, build, policy, mnonce hex) for recomputing LAUNCH_MEASURE. */
  launch?: Record<string, string | number>;
  keySlot?: number;
}

/** What the verifier checks, whatever format it arrived in. */
export interface VerifyInput {
  source: 'bundle' | 'tpm2-tools';
  /** claims: extraData = H(nonce ‖ claimsDigest); raw: extraData = nonce (tpm2-tools' own quotes). */
  binding: 'claims' | 'raw';
  /** What the attester claims to run on (never trusted: compared with the kind the EK certificate gives). */
  platformKind?: 'real' | 'emulated';
  quotes: QuoteInput[];
  ak: { tpmtPublic?: Buffer; pem?: string };
  ekCertificates?: string[];
  eventLogs: Partial<Record<LogKind, Buffer>>;
  enclaves: EnclaveInput[];
}

/** Remembered per AK between verifications (clock check). */
export interface ClockRecord {
  clock: string;
  resetCount: number;
  restartCount: number;
  at: string;
}

export interface EnrollmentRecord {
  schema: 'hyperenclave/ak-enrollment';
  version: 1;
  akName: string;
  akSpkiSha256: string;
  /** TPMT_PUBLIC of the AK, base64. */
  akPublic: string;
  ekCertSha256: string;
  ekCertSubject?: string;
  /** Derived at enrollment from the CA the EK certificate chains to: swtpm's local CA means emulated. */
  platformKind?: 'real' | 'emulated';
  platformReason?: string;
  enrolledAt: string;
  method: 'credential-activation';
  /** ES256 signature (base64url, r‖s) over the JSON of this record without `signature`, by the verifier key. */
  signature?: string;
}

export interface PendingEnrollment {
  id: string;
  secretSha256: string;
  akName: string;
  akSpkiSha256: string;
  akPublic: string;
  ekCertSha256: string;
  ekCertSubject?: string;
  platformKind?: 'real' | 'emulated';
  platformReason?: string;
  expiresAt: string;
}

