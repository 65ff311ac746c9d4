import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * The one place a test decides to skip because something on the machine is missing.
 *
 * Outside CI a missing component is a skip, printed as one "SKIP title: component: reason" line.
 * Under CI (CI=true, which .ci/run exports) a missing component that `make test` installs or builds,
 * or that a CI machine must provide (/dev/kvm), FAILS the test file instead: a green CI run then
 * means every real component was used. Only the components a machine genuinely may lack (listed
 * in README "Running the tests") stay skips under CI, still printed by name.
 */
export const COMPONENTS = {
  // Installed or built by `make test` (Makefile APT_PACKAGES, make build), or required of a CI machine.
  cli: { ci: 'required', what: 'the built CLI (dist/)' },
  addon: { ci: 'required', what: 'the Node-API addon (hypervisor/addon)' },
  'enclave-payloads': { ci: 'required', what: 'the enclave payloads (hypervisor/enclaves/out)' },
  swtpm: { ci: 'required', what: 'swtpm / swtpm-tools' },
  'tpm2-tools': { ci: 'required', what: 'tpm2-tools' },
  kvm: { ci: 'required', what: '/dev/kvm' },
  qemu: { ci: 'required', what: 'qemu-system-x86_64' },
  openssl: { ci: 'required', what: 'openssl' },
  cc: { ci: 'required', what: 'a C compiler (gcc)' },
  binutils: { ci: 'required', what: 'binutils (objcopy)' },
  make: { ci: 'required', what: 'make' },
  bash: { ci: 'required', what: 'bash' },
  zsh: { ci: 'required', what: 'zsh' },
  fish: { ci: 'required', what: 'fish' },
  script: { ci: 'required', what: 'util-linux script (pseudo-terminals)' },
  'systemd-analyze': { ci: 'required', what: 'systemd-analyze (systemd)' },
  // What a machine, CI included, may genuinely lack (README "Running the tests" lists each).
  'tpm-device': { ci: 'may-lack', what: 'a hardware TPM (/dev/tpmrm0, /dev/tpm0)' },
  'msr-device': { ci: 'may-lack', what: '/dev/cpu/0/msr (msr module, root)' },
  'cpuid-device': { ci: 'may-lack', what: '/dev/cpu/0/cpuid (cpuid module, root)' },
  'hyperenclave-driver': { ci: 'may-lack', what: '/dev/hyperenclave (our kernel driver, loaded only in the system tier guest)' },
  'acpi-tables': { ci: 'may-lack', what: 'ACPI tables in /sys/firmware/acpi/tables' },
  'firmware-memmap': { ci: 'may-lack', what: '/sys/firmware/memmap' },
  'known-cpu-vendor': { ci: 'may-lack', what: 'a CPU vendor the product knows (GenuineIntel, AuthenticAMD, HygonGenuine)' },
  // The reverse: this machine HAS hardware whose absent-path test then does not apply.
  'hardware-absent': { ci: 'may-lack', what: 'a machine without this hardware feature' },
} as const satisfies Record<string, { ci: 'required' | 'may-lack'; what: string }>;

export type Component = keyof typeof COMPONENTS;
export type Need = readonly [Component, string | null | undefined | false];

/** Whether this is a CI run, where missing required components fail (CI=true or CI=1, as CI services set it). */
export function isCi(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.CI === 'true' || env.CI === '1';
}

export class MissingInCi extends Error {}

/**
 * undefined when every need is met (the test runs); otherwise the first missing need's reason,
 * printed as a SKIP line. Under CI a missing `required` component throws MissingInCi instead.
 * Each need is [component, why it is missing here or a falsy value when present].
 */
export function skipUnless(title: string, needs: readonly Need[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const [component, reason] of needs) {
    if (!reason) continue;
    const spec = COMPONENTS[component];
    if (spec.ci === 'required' && isCi(env))
      throw new MissingInCi(`CI=true: "${title}" needs ${spec.what}, missing: ${reason}. Under CI a missing component fails instead of skipping (README "Running the tests").`);
    console.warn(`SKIP ${title}: ${component}: ${reason}`);
    return reason;
  }
  return undefined;
}

/** For checks inside a test: true when present; false (with a SKIP line) when absent; throws under CI for a required component. */
export function present(title: string, component: Component, reason: string | null | undefined | false, env: NodeJS.ProcessEnv = process.env): boolean {
  return skipUnless(title, [[component, reason]], env) === undefined;
}

/** Why `cmd` is not on PATH (with the Debian package to install), or undefined. */
export function commandMissing(cmd: string, debianPackage: string): string | undefined {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0 ? undefined : `${cmd} not on PATH (apt-get install ${debianPackage})`;
}

/** Why `path` does not exist, or undefined. */
export function pathMissing(path: string, hint: string): string | undefined {
  return existsSync(path) ? undefined : `${path} absent (${hint})`;
}
