/**
 * Policy digests computed in software (Part 3, the policy commands' "policyDigest update"),
 * to build authPolicy values without a trial session and to check what a TPM reports.
 */
import { digest, type HashAlg } from './alg.js';
import { TPM_CC } from './constants.js';
import { TpmWriter } from './marshal.js';
import { marshalPcrSelectionList, type PcrSelection } from './structures.js';

function cc(code: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(code);
  return b;
}

/** The starting policyDigest: all zeros of the hash size. */
export function emptyPolicy(hash: HashAlg): Buffer {
  return Buffer.alloc(hash.size);
}

/** TPM2_PolicySecret / PolicySigned style update: H(H(old ‖ cc ‖ name) ‖ policyRef). */
export function policySecretDigest(hash: HashAlg, prev: Buffer, authName: Buffer, policyRef: Buffer = Buffer.alloc(0)): Buffer {
  return digest(hash, digest(hash, prev, cc(TPM_CC.PolicySecret), authName), policyRef);
}

/** TPM2_PolicyAuthValue and TPM2_PolicyPassword (both record TPM_CC_PolicyAuthValue). */
export function policyAuthValueDigest(hash: HashAlg, prev: Buffer): Buffer {
  return digest(hash, prev, cc(TPM_CC.PolicyAuthValue));
}

export function policyCommandCodeDigest(hash: HashAlg, prev: Buffer, code: number): Buffer {
  return digest(hash, prev, cc(TPM_CC.PolicyCommandCode), cc(code));
}

/** TPM2_PolicyPCR: H(old ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ H(selected PCR values)). */
export function policyPcrDigest(hash: HashAlg, prev: Buffer, selection: PcrSelection[], pcrValuesDigest: Buffer): Buffer {
  const w = new TpmWriter();
  marshalPcrSelectionList(w, selection);
  return digest(hash, prev, cc(TPM_CC.PolicyPCR), w.finish(), pcrValuesDigest);
}
