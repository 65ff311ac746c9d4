import type { BootSteps } from './flow.js';
import { measureStep } from './measure-step.js';
import type { Platform } from '../platform/index.js';
import { platformReport } from '../platform/report.js';
import { archForCpuVendor, verifyContainerFile } from '../measure/container.js';
import { readCpuFacts } from '../platform/cpu.js';
import type { PcrPolicy } from '../measure/index.js';
import { openTpm } from '../tpm/index.js';
import { disableHypervisor, enableHypervisor, hypervisorStatus, loadHypervisor } from '../hypervisor/index.js';
import { HyperEnclaveError, EXIT } from '../errors.js';

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
        const r = await measureStep({ platform, tpm, imagePath: cfg.imagePath, policy: cfg.policy, ...(cfg.trustedKeys ? { trustedKeys: cfg.trustedKeys } : {}), ...(cfg.launchEnvironment ? { launchEnvironment: cfg.launchEnvironment } : {}) });
        return { events: r.measurement.events.length, pcrs: r.measurement.pcrs ?? {}, ...(r.drtm ? { drtm: r.drtm } : {}) };
      } finally {
        await tpm.close();
      }
    },
    async load(image) {
      await loadHypervisor(platform, image.path, sha256);
    },
    async enable() {
      await enableHypervisor(platform);
    },
    async isEnabled() {
      try {
        return (await hypervisorStatus(platform)).enabled;
      } catch {
        return false;
      }
    },
    async rollback() {
      await disableHypervisor(platform);
    },
  };
}

