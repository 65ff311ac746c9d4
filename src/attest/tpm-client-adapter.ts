/**
 * collectEvidence's and enrollment's TPM interfaces served by our TPM client (src/tpm):
 * PCR_Read + Quote with a loaded AK; EK certificate from NV, EK/AK public areas, and
 * ActivateCredential under the EK's PolicySecret(endorsement) session.
 */
import { X509Certificate } from 'node:crypto';
import { hashAlgByName, TPM_ALG } from '../tpm/alg.js';
import type { TpmClient, TpmObject } from '../tpm/client.js';
import { TpmReader } from '../tpm/marshal.js';
import { publicBytes, readIdObject2B, type TpmtPublic } from '../tpm/structures.js';
import type { AttesterTpm } from './collect.js';
import type { EnrollingTpm } from './enroll.js';
import { AttestError } from './errors.js';

type Loaded = TpmObject & { public: TpmtPublic };

export function clientAttesterTpm(client: TpmClient, ak: Loaded): AttesterTpm {
  const hashOf = (bank: string): number => {
    const alg = hashAlgByName(bank);
    if (!alg) throw new AttestError(`unknown PCR bank ${bank}`, 2);
    return alg.id;
  };
  return {
    async readPcrs(bank, pcrs) {
      const r = await client.pcrRead([{ hash: hashOf(bank), pcrs }]);
      const values = r.banks[0]?.values ?? new Map<number, Buffer>();
      const missing = pcrs.filter((p) => !values.has(p));
      if (missing.length) throw new AttestError(`the TPM has no ${bank} PCR ${missing.join(',')} (bank not active?)`, 7);
      return values;
    },
    async quote(bank, pcrs, qualifyingData) {
      const q = await client.quote(ak, [{ hash: hashOf(bank), pcrs }], qualifyingData);
      return { attest: q.attest, signature: q.signatureBytes };
    },
  };
}

export function clientEnrollingTpm(client: TpmClient, ek: Loaded, ak: Loaded): EnrollingTpm {
  return {
    async ekCertificates() {
      const der = await client.readEkCertificate(ek.public.type === TPM_ALG.ECC ? 'ecc' : 'rsa');
      if (!der) throw new AttestError('the TPM has no EK certificate in NV for this EK type', 3);
      try {
        return [new X509Certificate(der).toString()];
      } catch (e) {
        throw new AttestError(`EK certificate in NV does not parse: ${(e as Error).message}`);
      }
    },
    async ekPublic() {
      return publicBytes(ek.public);
    },
    async akPublic() {
      return publicBytes(ak.public);
    },
    async activateCredential(blob, secret) {
      const r = new TpmReader(blob);
      const idObject = readIdObject2B(r);
      if (secret.length < 2 || secret.readUInt16BE(0) !== secret.length - 2) throw new AttestError('encryptedSecret is not a TPM2B_ENCRYPTED_SECRET');
      return client.activateCredentialWithEk(ak, ek, idObject, secret.subarray(2));
    },
  };
}
