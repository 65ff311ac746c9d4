/**
 * The TPM parts of evidence as the verifier reads them. Parsing, key import and signature checks
 * are src/tpm's (structures.ts, signing-key.ts, verify.ts); this module gives them the verifier's
 * shapes and turns malformed TPM bytes into AttestError (bad evidence, one line, exit 6).
 */
import type { KeyObject } from 'node:crypto';
import { TPM_ALG, algName } from '../tpm/alg.js';
import { TPM_ST } from '../tpm/constants.js';
import { TpmProtocolError, TpmUsageError } from '../tpm/errors.js';
import { parsePublicArea, publicAreaName, signingKeyFrom, type SigningKey } from '../tpm/signing-key.js';
import { parseSignature as parseTpmtSignature, type TpmtPublic } from '../tpm/structures.js';
import { TpmVerifyError, checkSignature, decodeAttest, publicKeyFromTpmt, type SignatureCheck } from '../tpm/verify.js';
import { AttestError } from './errors.js';

export { TPM_GENERATED_VALUE } from '../tpm/constants.js';
export const TPM_ST_ATTEST_QUOTE = TPM_ST.ATTEST_QUOTE;
export type { SignatureCheck };

/** Runs a src/tpm parse or import; what it refuses becomes an AttestError, prefixed with `who` when given. */
function asEvidence<T>(fn: () => T, who = ''): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof TpmProtocolError || e instanceof TpmUsageError || e instanceof TpmVerifyError)) throw e;
    // a reader that ran out of bytes says so as data ({field, offset}): said as evidence truncation
    const p = e instanceof TpmProtocolError ? e.parse : undefined;
    const message = p?.truncated ? `${p.what}: truncated at byte ${p.offset} reading ${p.field} (${p.truncated.need} bytes, ${p.truncated.left} left)` : e.message;
    throw new AttestError(`${who}${message}`, undefined, { cause: e });
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
  /** Empty unless type is TPM_ST_ATTEST_QUOTE. */
  selection: PcrSelection[];
  pcrDigest: Buffer;
}

/** TPMS_ATTEST of a quote. Magic and type are returned, not enforced, so the verifier can name them. */
export function parseQuoteAttest(buf: Buffer): ParsedQuote {
  const a = asEvidence(() => decodeAttest(buf));
  const q = a.attested.kind === 'quote' ? a.attested : undefined;
  return {
    magic: a.magic,
    type: a.type,
    qualifiedSigner: a.qualifiedSigner,
    extraData: a.extraData,
    ...a.clockInfo,
    firmwareVersion: a.firmwareVersion,
    selection: q ? q.pcrSelect.map((s) => ({ hashAlg: s.hash, pcrs: s.pcrs })) : [],
    pcrDigest: q ? q.pcrDigest : Buffer.alloc(0),
  };
}

/** The signature schemes a quote may carry here. */
const QUOTE_SIG_ALGS: readonly number[] = [TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.ECDSA, TPM_ALG.SM2, TPM_ALG.ECSCHNORR];

export interface ParsedSignature {
  sigAlg: number;
  hashAlg: number;
}

/** TPMT_SIGNATURE of a quote: refused when unsigned (TPM_ALG_NULL) or not an RSA/ECC scheme. */
export function parseSignature(buf: Buffer): ParsedSignature {
  const s = asEvidence(() => parseTpmtSignature(buf));
  if (s.kind === 'null') throw new AttestError('TPMT_SIGNATURE: sigAlg is TPM_ALG_NULL (unsigned)');
  if (s.kind === 'hmac' || !QUOTE_SIG_ALGS.includes(s.sigAlg)) throw new AttestError(`TPMT_SIGNATURE: unsupported sigAlg ${algName(s.sigAlg)}`);
  return { sigAlg: s.sigAlg, hashAlg: s.hash };
}

export interface ParsedPublic {
  type: number;
  nameAlg: number;
  attributes: number;
  key: KeyObject;
  area: TpmtPublic;
}

/** TPMT_PUBLIC (or TPM2B_PUBLIC) of an RSA or ECC key, with its exact TPMT bytes. */
export function parsePublic(input: Buffer): { pub: ParsedPublic; tpmt: Buffer } {
  return asEvidence(() => {
    const { public: area, bytes } = parsePublicArea(input);
    return { pub: { type: area.type, nameAlg: area.nameAlg, attributes: area.objectAttributes, key: publicKeyFromTpmt(area), area }, tpmt: bytes };
  });
}

/** Object Name = nameAlg (u16) ‖ H_nameAlg(TPMT_PUBLIC). */
export function akNameOf(publicArea: Buffer): Buffer {
  return asEvidence(() => {
    const { public: area, bytes } = parsePublicArea(publicArea);
    return publicAreaName(bytes, area.nameAlg);
  });
}

export type AkKey = SigningKey;

/** The AK as the verifier uses it (TPMT_PUBLIC and/or PEM; both must be the same key). */
export function akKeyFromInput(ak: { tpmtPublic?: Buffer; pem?: string }): AkKey {
  return asEvidence(() => signingKeyFrom(ak), 'AK ');
}

/** Verifies a TPMT_SIGNATURE over TPMS_ATTEST bytes with the AK; never throws. */
export function verifyQuoteSignature(attest: Buffer, signature: Buffer, ak: AkKey): SignatureCheck {
  return checkSignature(ak, attest, signature);
}
