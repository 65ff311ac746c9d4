import { existsSync } from 'node:fs';
import { readCpuFacts, type CpuFacts } from './cpu.js';
import { readIommuTable } from '../../firmware-tools/acpi.js';
import { BACKEND_KINDS, describeBackend, detectPlatformFacts, emulatedPlatformFacts, emulatedSlotRanges, EmulatedKeySlotAllocator } from '../enclave/backends/index.js';
import { LINUX_TPM_DEVICES, type Platform } from './index.js';
import { swtpmAvailable } from './emulated/swtpm.js';

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
