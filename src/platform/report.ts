import { existsSync } from 'node:fs';
import { readCpuFacts, type CpuFacts } from './cpu.js';
import { readIommuTable } from '../../firmware-tools/acpi.js';
import { BACKEND_KINDS, describeBackend, detectPlatformFacts, emulatedPlatformFacts, emulatedSlotRanges, EmulatedKeySlotAllocator } from '../enclave/backends/index.js';
import { LINUX_TPM_DEVICES, type Platform } from './index.js';
import { swtpmAvailable } from './emulated/swtpm.js';
import { cpuHasSmx } from '../txt/registers.js';
import { readTxtReport } from '../txt/platform.js';

/** One capability the product needs, whether it is there, and what to do when it is not. */
export interface Feature {
  name: string;
  available: boolean;
  detail: string;
  fix?: string;
}

export interface PlatformReport {
  schema: 'hyperenclave/platform';
  version: 1;
  platform: Platform['kind'];
  cpu: Omit<CpuFacts, 'kvm'>;
  features: Feature[];
}

/** What this machine (or the emulated platform) can do, feature by feature. */
export function platformReport(platform: Platform, extra: Feature[] = []): PlatformReport {
  const cpu = readCpuFacts();
  const { kvm, ...cpuOnly } = cpu;
  const features: Feature[] = [];
  const emulated = platform.kind === 'emulated';

  if (emulated) {
    features.push({ name: 'virtualization', available: true, detail: 'emulated: the Rust core serves hypervisor requests in a user process' });
  } else {
    const vt = cpu.vmx ? 'Intel VT-x' : cpu.svm ? 'AMD-V' : '';
    features.push(
      vt
        ? { name: 'virtualization', available: true, detail: `${vt}${cpu.nestedPaging ? ' with nested paging' : ' without EPT/NPT'}` }
        : { name: 'virtualization', available: false, detail: 'no vmx/svm flag in /proc/cpuinfo', fix: 'enable VT-x/AMD-V in firmware setup' },
    );
  }
  features.push(
    kvm.usable
      ? { name: 'kvm', available: true, detail: '/dev/kvm usable (enclave VMs run real guest code)' }
      : { name: 'kvm', available: false, detail: kvm.reason ?? '/dev/kvm unusable', fix: 'modprobe kvm_intel or kvm_amd; add the user to group kvm' },
  );

  if (emulated) {
    const why = swtpmAvailable({ ek: true });
    features.push(why ? { name: 'tpm', available: false, detail: why, fix: 'apt-get install swtpm swtpm-tools' } : { name: 'tpm', available: true, detail: 'swtpm (TPM 2.0 from libtpms), EK certificates from a local CA' });
  } else {
    const dev = LINUX_TPM_DEVICES.find((d) => existsSync(d));
    features.push(dev ? { name: 'tpm', available: true, detail: dev } : { name: 'tpm', available: false, detail: 'no /dev/tpmrm0 or /dev/tpm0', fix: 'enable the TPM in firmware; modprobe tpm_tis / tpm_crb' });
  }

  const iommu = readIommuTable();
  features.push(
    iommu.table
      ? { name: 'iommu', available: true, detail: `${iommu.table.header.signature}: ${iommu.table.iommus.length} unit(s), ${iommu.table.reserved.length} DMA-reserved range(s)` }
      : { name: 'iommu', available: false, detail: iommu.reason ?? 'absent', fix: 'enable VT-d / AMD-Vi in firmware (DMA protection for enclave memory)' },
  );

  features.push(drtmFeature(platform));

  const facts = emulated ? emulatedPlatformFacts() : detectPlatformFacts();
  const allocator = new EmulatedKeySlotAllocator(emulatedSlotRanges());
  for (const kind of BACKEND_KINDS) {
    if (kind === 'none') continue;
    const c = describeBackend(kind, { facts, allocator });
    features.push({ name: kind, available: c.available, detail: c.reason, ...(c.available ? {} : { fix: 'use --backend none, or a machine with this feature enabled in firmware' }) });
  }
  features.push(...extra);
  return { schema: 'hyperenclave/platform', version: 1, platform: platform.kind, cpu: cpuOnly, features };
}

/**
 * The dynamic launch. Emulated: this tool performs it against the TPM (`boot` with a launch
 * environment). Real hardware: tboot/SINIT performed it before Linux; what it left is read from
 * the TXT public registers and, after a measured launch, the DRTM log in the TXT heap (both
 * through /dev/mem, so root and a kernel without strict /dev/mem are needed).
 */
export function drtmFeature(platform: Pick<Platform, 'drtm'>, opts: { devMem?: string; cpuinfo?: string } = {}): Feature {
  if (platform.drtm === 'emulated') return { name: 'drtm', available: true, detail: 'emulated dynamic launch (PCR 17-22 extended by this tool from a launch environment, src/txt/drtm.ts)' };
  if (!cpuHasSmx(opts.cpuinfo)) return { name: 'drtm', available: false, detail: 'the CPU has no SMX (no Intel TXT)', fix: 'a TXT-capable Intel platform with TXT enabled in firmware setup, booted through tboot' };
  const r = readTxtReport(opts);
  if (!r.txt.present) return { name: 'drtm', available: false, detail: r.txt.reason, fix: 'run as root on a kernel that allows /dev/mem reads of the TXT space; enable TXT in firmware setup' };
  const st = r.txt.status;
  if (!st.measuredLaunch)
    return { name: 'drtm', available: false, detail: `TXT present, no measured launch (SENTER.DONE ${st.sts.senterDone ? 1 : 0}, SEXIT.DONE ${st.sts.sexitDone ? 1 : 0}${st.error.valid ? `, ERRORCODE ${st.error.raw}` : ''})`, fix: 'boot through tboot with a SINIT ACM for this chipset' };
  const log = r.drtmLog
    ? r.drtmLog.kind === 'tcg-agile'
      ? `, DRTM log (TCG crypto-agile, ${r.drtmLog.log.length} B) in the TXT heap`
      : `, DRTM log (tboot per-algorithm: ${r.drtmLog.logs.map((l) => `${l.alg} ${l.events.length} event(s)`).join(', ')}) in the TXT heap`
    : r.drtmLogError ? `, DRTM log unreadable: ${r.drtmLogError}` : ', no DRTM log pointer in the TXT heap';
  return { name: 'drtm', available: true, detail: `TXT measured launch${log}` };
}
