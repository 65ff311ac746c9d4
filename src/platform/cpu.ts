import { existsSync, readFileSync, accessSync, constants } from 'node:fs';

/** What /proc/cpuinfo and /dev say about virtualization support on this machine. */
export interface CpuFacts {
  vendor: string;
  model: string;
  cpus: number;
  /** Intel VT-x. */
  vmx: boolean;
  /** AMD-V (also on Hygon). */
  svm: boolean;
  /** Running under another hypervisor (CPUID.1:ECX[31]). */
  underHypervisor: boolean;
  /** Nested paging: EPT (Intel) or NPT (AMD). */
  nestedPaging: boolean;
  kvm: { present: boolean; usable: boolean; reason?: string };
}

export function parseCpuinfo(text: string): Omit<CpuFacts, 'kvm'> {
  const first = text.split('\n\n')[0] ?? '';
  const field = (k: string): string => new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm').exec(first)?.[1]?.trim() ?? '';
  const flags = new Set(field('flags').split(/\s+/));
  const cpus = (text.match(/^processor\s*:/gm) ?? []).length;
  return {
    vendor: field('vendor_id'),
    model: field('model name'),
    cpus,
    vmx: flags.has('vmx'),
    svm: flags.has('svm'),
    underHypervisor: flags.has('hypervisor'),
    nestedPaging: flags.has('ept') || flags.has('npt'),
  };
}

export function kvmFacts(dev = '/dev/kvm'): CpuFacts['kvm'] {
  if (!existsSync(dev)) return { present: false, usable: false, reason: `${dev} absent (load kvm_intel/kvm_amd, or enable virtualization in firmware)` };
  try {
    accessSync(dev, constants.R_OK | constants.W_OK);
    return { present: true, usable: true };
  } catch {
    return { present: true, usable: false, reason: `${dev} not accessible to uid ${process.getuid?.()} (join group kvm)` };
  }
}

/**
 * Test-only: the CPU vendor string the test suite makes this process believe in, so that one
 * machine proves the other vendor's paths (which image arch `boot` expects) pass too. Only the
 * three vendor strings the product knows are honoured; `hyperenclave platform` says when it is set.
 */
export const CPU_VENDOR_OVERRIDE_ENV = 'HYPERENCLAVE_TEST_CPU_VENDOR';
export const KNOWN_CPU_VENDORS = ['GenuineIntel', 'AuthenticAMD', 'HygonGenuine'] as const;

/** The vendor forced by CPU_VENDOR_OVERRIDE_ENV, or undefined; any other value is an error. */
export function cpuVendorOverride(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env[CPU_VENDOR_OVERRIDE_ENV];
  if (!v) return undefined;
  if (!(KNOWN_CPU_VENDORS as readonly string[]).includes(v)) throw new Error(`${CPU_VENDOR_OVERRIDE_ENV}: expected one of ${KNOWN_CPU_VENDORS.join(', ')}, got "${v}"`);
  return v;
}

export function readCpuFacts(): CpuFacts {
  const facts = { ...parseCpuinfo(readFileSync('/proc/cpuinfo', 'utf8')), kvm: kvmFacts() };
  const forced = cpuVendorOverride();
  return forced ? { ...facts, vendor: forced } : facts;
}
