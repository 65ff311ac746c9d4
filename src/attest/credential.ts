/**
 * MakeCredential for enrollment, by src/tpm's software TPM2_MakeCredential (RSA EK: OAEP
 * "IDENTITY"; ECC EK: ECDH + KDFe; KDFa "STORAGE"/"INTEGRITY", AES-CFB, HMAC), with the EK
 * given as bytes and both outputs carrying their TPM2B size prefix, plus tpm2-tools' file form.
 */
import { makeCredential as tpmMakeCredential } from '../tpm/crypto.js';
import { marshal } from '../tpm/marshal.js';
import { AttestError } from './errors.js';
import { parsePublic } from './tpm-structures.js';

export interface Credential {
  /** TPM2B_ID_OBJECT (with its size prefix), the ActivateCredential credentialBlob. */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET (with its size prefix), the ActivateCredential secret. */
  encryptedSecret: Buffer;
}

/** MakeCredential for the EK (TPMT_PUBLIC or TPM2B_PUBLIC), a secret (≤ digest size) and the AK Name. */
export function makeCredentialForEk(ekPublic: Buffer, secret: Buffer, akName: Buffer): Credential {
  const pub = parsePublic(ekPublic).pub.area;
  try {
    const made = tpmMakeCredential(pub, secret, akName);
    return { credentialBlob: made.credentialBlobBytes, encryptedSecret: marshal((w) => w.tpm2b(made.secret)) };
  } catch (e) {
    throw new AttestError(`MakeCredential: ${(e as Error).message}`);
  }
}

/** tpm2-tools' credential file (`tpm2_makecredential -o`, `tpm2_activatecredential -i`): 0xBADCC0DE, version 1, blob, secret. */
export function toTpm2ToolsCredentialFile(c: Credential): Buffer {
  return marshal((w) => w.u32(0xbadcc0de).u32(1).bytes(c.credentialBlob).bytes(c.encryptedSecret));
}
