import type { BootSteps } from './flow.js';
import { measureStep } from './measure-step.js';
import type { Platform } from '../platform/index.js';
import { platformReport } from '../platform/report.js';
import { archForCpuVendor, verifyContainerFile } from '../measure/container.js';
import { readCpuFacts } from '../platform/cpu.js';
import { banksForTpm, measureTpmFor, planMeasurement, type PcrPolicy, type PlannedEvent } from '../measure/index.js';
import { withJournaledRuntimeLog } from '../measure/journal.js';
import type { HypervisorStatus } from '../hypervisor/client.js';
import { openTpm } from '../tpm/index.js';
import { disableHypervisor, enableHypervisor, hypervisorStatus, loadHypervisor, withHypervisor } from '../hypervisor/index.js';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { trustStep } from './trust-step.js';

/** The boot flow's steps on a platform: real devices on linux, swtpm + the service when emulated. */
export function bootStepsFor(
  platform: Platform,
  cfg: { imagePath: string; policy: PcrPolicy; trustedKeys?: string[]; launchEnvironment?: Buffer; tcti?: string },
): BootSteps {
  let sha256 = '';
  return {
    bootId: () => platform.bootId(),
    async checkPlatform() {
      const r = platformReport(platform);
      const need = ['virtualization', 'tpm'];
      const missing = r.features.filter((f) => need.includes(f.name) && !f.available);
      if (missing.length) throw new HyperEnclaveError(`platform: ${missing.map((f) => `${f.name}: ${f.detail}${f.fix ? ` (fix: ${f.fix})` : ''}`).join('; ')}`, EXIT.UNSUPPORTED);
    },
    async verifyImage() {
      const expectedArch = archForCpuVendor(readCpuFacts().vendor);
      const img = await verifyContainerFile(cfg.imagePath, { banks: ['sha256'], ...(expectedArch ? { expectedArch } : {}), ...(cfg.trustedKeys ? { trustedKeys: cfg.trustedKeys, requireSignature: true } : {}) });
      sha256 = img.header.imageSha256.toString('hex');
      return { id: img.id, path: cfg.imagePath };
    },
    async measure() {
      const tpm = await openTpm(cfg.tcti ?? (await platform.defaultTcti()));
      try {
        const r = await measureStep({
          platform,
          tpm,
          imagePath: cfg.imagePath,
          policy: cfg.policy,
          ...(cfg.trustedKeys ? { trustedKeys: cfg.trustedKeys } : {}),
          ...(cfg.launchEnvironment ? { launchEnvironment: cfg.launchEnvironment } : {}),
          // The kernel driver measures what it loads: on linux the image event is its extension.
          ...(platform.kind === 'linux' ? { extendImage: (e: PlannedEvent) => loadMeasuredByDriver(platform, cfg.imagePath, sha256, e) } : {}),
        });
        return {
          events: r.measurement.events.length,
          ...(r.measurement.alreadyMeasured ? { alreadyMeasured: r.measurement.alreadyMeasured } : {}),
          ...(r.recovered.length ? { recovered: r.recovered } : {}),
          pcrs: r.measurement.pcrs ?? {},
          ...(r.drtm ? { drtm: r.drtm } : {}),
        };
      } finally {
        await tpm.close();
      }
    },
    async load(image, opts) {
      if (platform.kind === 'linux') {
        const s = await hypervisorStatus(platform);
        // loaded (and measured) by the measure step; after a disable in this boot the PCR is capped
        // and the image is loaded again below (the driver measures it, the log records it)
        if (!opts?.reload && s.loaded && s.image?.sha256 === sha256) return;
        // The measurement was recorded earlier in this boot but the driver lost the image (module
        // reloaded): loading extends the PCR again, so that extension is logged too.
        await loadAndLogByDriver(platform, cfg, sha256);
        return;
      }
      // Loaded earlier in this boot (enable --image, or a boot before a disable): the same image stays.
      const s = await hypervisorStatus(platform);
      if (s.loaded && s.image?.sha256 === sha256) return;
      await loadHypervisor(platform, image.path, sha256);
    },
    async enable() {
      await enableHypervisor(platform);
    },
    trust: async () => ({ ...(await trustStep(platform, cfg.tcti)) }),
    async isEnabled() {
      try {
        return (await hypervisorStatus(platform)).enabled;
      } catch {
        return false;
      }
    },
    async rollback() {
      await disableAndRecord(platform);
    },
  };
}


/**
 * DISABLE; on linux the hypervisor capped its PCR before leaving and disableHypervisor logs that
 * exit event in the runtime log (src/hypervisor/exit-event.ts), so the log keeps replaying.
 */
export function disableAndRecord(platform: Platform): Promise<HypervisorStatus> {
  return disableHypervisor(platform);
}

/** HE_IOC_LOAD as the image event's extension: the driver's PCR must be the policy's, every bank extended. */
async function loadMeasuredByDriver(platform: Platform, imagePath: string, sha256: string, event: PlannedEvent): Promise<void> {
  await withHypervisor(platform, async (c) => {
    const driverPcr = c.measurementPcr ? await c.measurementPcr() : undefined;
    if (driverPcr !== undefined && driverPcr !== event.pcr)
      throw new HyperEnclaveError(`measure: the driver measures into PCR ${driverPcr}, the PCR policy puts the image into PCR ${event.pcr} (load hyperenclave.ko with pcr=${event.pcr} or change the policy)`, EXIT.UNSUPPORTED);
    const loaded = await c.load(imagePath, sha256);
    const banks = Object.keys(event.digests).length;
    if (loaded.measured && loaded.measured.banks !== banks)
      throw new HyperEnclaveError(`measure: the driver extended ${loaded.measured.banks} PCR banks, this tool logged ${banks}`, EXIT.VERIFY_FAILED);
  });
}

async function loadAndLogByDriver(platform: Platform, cfg: { imagePath: string; policy: PcrPolicy; tcti?: string }, sha256: string): Promise<void> {
  const tpm = await openTpm(cfg.tcti ?? (await platform.defaultTcti()));
  try {
    const banks = banksForTpm(cfg.policy, await measureTpmFor(tpm).activeBanks());
    const img = await verifyContainerFile(cfg.imagePath, { banks });
    const event = planMeasurement(img, cfg.policy, banks).find((e) => e.measure === 'image');
    if (!event) throw new HyperEnclaveError(`load: PCR policy ${cfg.policy.name} has no image event, but the driver measures the image`, EXIT.UNSUPPORTED);
    const mt = measureTpmFor(tpm);
    await withJournaledRuntimeLog({ stateDir: platform.stateDir, tpm: mt, banks, what: 'boot' }, async ({ log, journal }) => {
      const record = { pcr: event.pcr, type: event.eventType, digests: event.digests as Record<string, Buffer>, data: event.data };
      journal.intend(record, log.eventCount, { progress: false });
      await loadMeasuredByDriver(platform, cfg.imagePath, sha256, event);
      await log.append(record);
      journal.confirm({ progress: false });
    });
  } finally {
    await tpm.close();
  }
}
