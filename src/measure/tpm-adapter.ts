import { algName, type HashAlgName, hashAlgById, hashAlgByName } from '../tpm/alg.js';
import type { TpmClient } from '../tpm/client.js';
import type { MeasureTpm } from './measure.js';
import type { PcrValues } from './plan.js';
import { ImageError } from './errors.js';

/** The TPM boot identity: a TPM Reset (reboot, power cycle) or Restart changes it. */
export const tpmEpochOf = (c: { resetCount: number; restartCount: number }): string => `reset-${c.resetCount}.restart-${c.restartCount}`;

function algId(bank: HashAlgName): number {
  const a = hashAlgByName(bank);
  if (!a) throw new ImageError(`measure: unknown bank ${bank}`);
  return a.id;
}

/** What measureImage needs, from src/tpm's client. */
export function measureTpmFor(client: TpmClient): MeasureTpm {
  return {
    activeBanks: async () => (await client.getActiveBanks()).map((id) => hashAlgById(id)?.name ?? algName(id)),
    pcrExtend: (pcr, digests) => client.pcrExtend(pcr, digests.map((d) => ({ hashAlg: algId(d.alg), digest: d.digest }))),
    pcrRead: async (pcrs, banks) => {
      const r = await client.pcrRead(banks.map((b) => ({ hash: algId(b), pcrs })));
      const out: PcrValues = {};
      for (const bank of r.banks) {
        const name = hashAlgById(bank.hash)?.name;
        if (name) out[name] = Object.fromEntries(bank.values);
      }
      return out;
    },
    epoch: async () => tpmEpochOf(await client.readClock()),
  };
}

/** Same as measureTpmFor (the name src/boot and src/cli import). */
export const measureTpmOf = measureTpmFor;
