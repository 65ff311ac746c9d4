import { banksForTpm, measureImage, type MeasureResult, type PcrPolicy, type PlannedEvent } from '../measure/index.js';
import { archForCpuVendor, verifyContainerFile } from '../measure/container.js';
import { readCpuFacts } from '../platform/cpu.js';
import { measureTpmFor } from '../measure/tpm-adapter.js';
import { DrtmLogRecorder, emulatedLaunch, planDrtmLaunch, type DrtmTpm } from '../txt/index.js';
import type { TpmClient } from '../tpm/client.js';
import { hashAlgByName } from '../tpm/alg.js';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { drtmLogPath } from '../platform/logs.js';
import { withJournaledRuntimeLog } from '../measure/journal.js';
import type { Platform } from '../platform/index.js';

/** The emulated chipset: swtpm's control channel gives locality and the HASH_START/DATA/END sequence. */
export function drtmTpmOf(tpm: TpmClient): DrtmTpm {
  const control = (tpm.transport as { control?: { hashStart(): Promise<void>; hashData(d: Uint8Array): Promise<void>; hashEnd(): Promise<void> } }).control;
  if (!control) throw new HyperEnclaveError('DRTM: this TPM has no swtpm control channel (an emulated launch needs swtpm)', EXIT.UNSUPPORTED);
  return {
    setLocality: (l) => tpm.setLocality(l),
    hashStart: () => control.hashStart(),
    hashData: (d) => control.hashData(d),
    hashEnd: () => control.hashEnd(),
    pcrExtend: (pcr, digests) => tpm.pcrExtend(pcr, digests.map((d) => ({ hashAlg: hashAlgByName(d.alg)!.id, digest: d.digest }))),
  };
}

export interface MeasureStepResult {
  measurement: MeasureResult;
  /** What the write-ahead journal had to settle from an interrupted run (empty when clean). */
  recovered: string[];
  drtm?: { pcrs: number[]; events: number; log: string };
}

/**
 * The boot flow's measure step: static measurement into the policy's PCRs (runtime log), and,
 * with a launch environment on the emulated platform, a dynamic launch into PCR17/18 (DRTM log).
 */
export async function measureStep(args: {
  platform: Platform;
  tpm: TpmClient;
  imagePath: string;
  policy: PcrPolicy;
  trustedKeys?: string[];
  launchEnvironment?: Buffer;
  /** See measureImage: the linux driver extends the image event while loading. */
  extendImage?: (event: PlannedEvent) => Promise<void>;
}): Promise<MeasureStepResult> {
  const mt = measureTpmFor(args.tpm);
  const banks = banksForTpm(args.policy, await mt.activeBanks());
  const expectedArch = archForCpuVendor(readCpuFacts().vendor);
  const verify = { banks, ...(expectedArch ? { expectedArch } : {}), ...(args.trustedKeys ? { trustedKeys: args.trustedKeys, requireSignature: true } : {}) };
  const img = await verifyContainerFile(args.imagePath, verify);
  // Write-ahead: the journal and the TPM settle whatever a killed run left, and an image already
  // measured in this TPM boot is not extended again.
  const { measurement, recovered } = await withJournaledRuntimeLog({ stateDir: args.platform.stateDir, tpm: mt, banks, what: 'boot' }, async ({ log, journal, reconciliation }) => ({
    measurement: await measureImage({ tpm: mt, log, journal, policy: args.policy, image: img, ...(args.extendImage ? { extendImage: args.extendImage } : {}) }),
    recovered: reconciliation.actions,
  }));
  if (!args.launchEnvironment) return { measurement, recovered };
  if (args.platform.drtm !== 'emulated')
    throw new HyperEnclaveError('DRTM: a real TXT launch is performed by tboot/SINIT before Linux, not by this command; read its result with "hyperenclave platform"', EXIT.UNSUPPORTED);
  const steps = planDrtmLaunch(args.launchEnvironment, img, args.policy, banks);
  const rec = new DrtmLogRecorder();
  await emulatedLaunch(drtmTpmOf(args.tpm), args.launchEnvironment, steps, rec);
  const path = drtmLogPath(args.platform.stateDir);
  rec.writeTo(path, banks);
  return { measurement, recovered, drtm: { pcrs: [...new Set(steps.map((s) => s.pcr))], events: steps.length, log: path } };
}
