import { archForCpuVendor, type ImageArch } from '../../src/measure/container.js';
import { CPU_VENDOR_OVERRIDE_ENV, readCpuFacts } from '../../src/platform/cpu.js';

/**
 * The image architecture `boot` expects on this machine: the one matching the CPU vendor (or the
 * vendor forced by HYPERENCLAVE_TEST_CPU_VENDOR, which the CLI processes the tests start inherit).
 * A vendor the product does not know makes boot check no arch; intel-vmx is then as good as any.
 */
export function hostImageArch(): ImageArch {
  return archForCpuVendor(readCpuFacts().vendor) ?? 'intel-vmx';
}

/** An architecture `boot` refuses on this machine (undefined when the vendor is unknown: nothing is refused). */
export function foreignImageArch(): ImageArch | undefined {
  if (!archForCpuVendor(readCpuFacts().vendor)) return undefined;
  return hostImageArch() === 'intel-vmx' ? 'amd-svm' : 'intel-vmx';
}

/** For a test title: which vendor the suite runs as, and whether it was forced. */
export function vendorNote(): string {
  const forced = process.env[CPU_VENDOR_OVERRIDE_ENV];
  return `${readCpuFacts().vendor || 'unknown vendor'}${forced ? ` (forced by ${CPU_VENDOR_OVERRIDE_ENV})` : ''}`;
}
