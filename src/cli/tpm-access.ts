import { openTpm, hashAlgByName, hashAlgById, type TpmClient } from '../tpm/index.js';
import type { Platform } from '../platform/index.js';
import { HyperEnclaveError, EXIT } from '../errors.js';

/** --tcti, else HYPERENCLAVE_TCTI / TPM2TOOLS_TCTI, else the configuration's `tcti`, else the platform's own TPM (Platform.resolveTcti). */
export function tctiFor(platform: Platform, tcti?: string): Promise<string> {
  return platform.resolveTcti(tcti);
}

/** Opens the TPM for one command and always closes it (flushing nothing it did not create). */
export async function withTpm<T>(platform: Platform, tcti: string | undefined, fn: (tpm: TpmClient) => Promise<T>): Promise<T> {
  const tpm = await openTpm(await tctiFor(platform, tcti));
  try {
    return await fn(tpm);
  } finally {
    await tpm.close();
  }
}

export function bankId(name: string): number {
  const alg = hashAlgByName(name);
  if (!alg) throw new HyperEnclaveError(`--bank: unknown hash algorithm "${name}" (sha1, sha256, sha384, sha512, sm3_256)`, EXIT.USAGE);
  return alg.id;
}

/** Live PCR values for the banks/PCRs wanted, as bank name → index → value. */
export async function readLivePcrs(platform: Platform, tcti: string | undefined, wanted: Map<string, number[]>): Promise<Map<string, Map<number, Buffer>>> {
  return withTpm(platform, tcti, async (tpm) => {
    const sel = [...wanted].filter(([, pcrs]) => pcrs.length).map(([bank, pcrs]) => ({ hash: bankId(bank), pcrs }));
    const out = new Map<string, Map<number, Buffer>>();
    if (!sel.length) return out;
    const active = new Set((await tpm.getPcrBanks()).filter((b) => b.pcrs.length).map((b) => b.hash));
    const { banks } = await tpm.pcrRead(sel.filter((s) => active.has(s.hash)));
    for (const b of banks) out.set(hashAlgById(b.hash)!.name, b.values);
    return out;
  });
}
