import { type HashAlgName, hashAlgByName } from '../tpm/alg.js';
import type { TpmClient } from '../tpm/client.js';
import type { SwtpmControl } from '../tpm/transport/swtpm-control.js';
import type { DrtmTpm } from './drtm.js';
import { TxtError } from './registers.js';

/**
 * The emulated chipset: swtpm's control channel plays the locality-4 HASH_START/DATA/END, the
 * TPM client extends at locality 2 (its locality goes through the same control channel).
 */
export function drtmTpmFor(client: TpmClient, control: SwtpmControl): DrtmTpm {
  const id = (b: HashAlgName): number => {
    const a = hashAlgByName(b);
    if (!a) throw new TxtError(`DRTM: unknown bank ${b}`);
    return a.id;
  };
  return {
    setLocality: (l) => client.setLocality(l),
    hashStart: () => control.hashStart(),
    hashData: (d) => control.hashData(d),
    hashEnd: () => control.hashEnd(),
    pcrExtend: (pcr, digests) => client.pcrExtend(pcr, digests.map((d) => ({ hashAlg: id(d.alg), digest: d.digest }))),
  };
}
