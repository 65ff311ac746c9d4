/**
 * MakeCredential for enrollment, by src/tpm's software TPM2_MakeCredential (RSA EK: OAEP
 * "IDENTITY"; ECC EK: ECDH + KDFe; KDFa "STORAGE"/"INTEGRITY", AES-CFB, HMAC), with the EK
 * given as bytes and both outputs carrying their TPM2B size prefix, plus tpm2-tools' file form.
 */
import { makeCredential as tpmMakeCredential } from '../tpm/crypto.js';
import { unmarshalExact } from '../tpm/marshal.js';
import { readPublic } from '../tpm/structures.js';
import { AttestError } from './errors.js';
import { parsePublic } from './tpm-structures.js';

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
function tpm2b(b: Buffer): Buffer {
  const h = Buffer.alloc(2);
  h.writeUInt16BE(b.length);
  return Buffer.concat([h, b]);
}

export interface Credential {
  /** TPM2B_ID_OBJECT (with its size prefix), the ActivateCredential credentialBlob. */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET (with its size prefix), the ActivateCredential secret. */
  encryptedSecret: Buffer;
}

/** MakeCredential for the EK (TPMT_PUBLIC or TPM2B_PUBLIC), a secret (≤ digest size) and the AK Name. */
export function makeCredentialForEk(ekPublic: Buffer, secret: Buffer, akName: Buffer): Credential {
  const tpmt = parsePublic(ekPublic).tpmt;
  let pub: ReturnType<typeof readPublic>;
  try {
    pub = unmarshalExact(tpmt, 'EK TPMT_PUBLIC', readPublic);
  } catch (e) {
    throw new AttestError(`EK public: ${(e as Error).message}`);
  }
  try {
    const made = tpmMakeCredential(pub, secret, akName);
    return { credentialBlob: made.credentialBlobBytes, encryptedSecret: tpm2b(made.secret) };
  } catch (e) {
    throw new AttestError(`MakeCredential: ${(e as Error).message}`);
  }
}

/** tpm2-tools' credential file (`tpm2_makecredential -o`, `tpm2_activatecredential -i`): 0xBADCC0DE, version 1, blob, secret. */
export function toTpm2ToolsCredentialFile(c: Credential): Buffer {
  return Buffer.concat([u32(0xbadcc0de), u32(1), c.credentialBlob, c.encryptedSecret]);
}
