import { existsSync, readFileSync } from 'node:fs';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { resolveStateDir } from './state.js';
import { ensureEmulatedTpm } from './emulated/tpm-daemon.js';

export type PlatformKind = 'linux' | 'emulated';

/** Where things run. Everything platform-specific is reached through this. */
export interface Platform {
  readonly kind: PlatformKind;
  readonly stateDir: string;
  /** The TCTI of this platform's own TPM (starting the emulated one if needed). */
  defaultTcti(): Promise<string>;
  /** Changes at every reboot: the kernel's boot_id, or the emulated TPM's power cycle. */
  bootId(): Promise<string>;
}

export const LINUX_TPM_DEVICES = ['/dev/tpmrm0', '/dev/tpm0'];

/** auto: linux when /dev/hyperenclave or a TPM device exists, else emulated. */
export function detectPlatformKind(): PlatformKind {
  if (existsSync('/dev/hyperenclave')) return 'linux';
  if (LINUX_TPM_DEVICES.some((d) => existsSync(d))) return 'linux';
  return 'emulated';
}

export function openPlatform(opts: { platform?: string; stateDir?: string } = {}): Platform {
  const wanted = opts.platform ?? (process.env.HYPERENCLAVE_PLATFORM || 'auto');
  let kind: PlatformKind;
  if (wanted === 'auto') kind = detectPlatformKind();
  else if (wanted === 'linux' || wanted === 'emulated') kind = wanted;
  else throw new HyperEnclaveError(`--platform: expected linux, emulated or auto, got "${wanted}"`, EXIT.USAGE);
  const stateDir = resolveStateDir(opts.stateDir);
  if (kind === 'linux') {
    return {
      kind,
      stateDir,
      async defaultTcti() {
        const dev = LINUX_TPM_DEVICES.find((d) => existsSync(d));
        if (!dev) throw new HyperEnclaveError('platform linux: no TPM device (/dev/tpmrm0, /dev/tpm0 absent)', EXIT.UNSUPPORTED);
        return `device:${dev}`;
      },
      async bootId() {
        return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      },
    };
  }
  return {
    kind,
    stateDir,
    async defaultTcti() {
      return (await ensureEmulatedTpm(stateDir)).tcti;
    },
    async bootId() {
      // The emulated machine "reboots" when its TPM is power-cycled (PCRs reset): the TPM's own
      // reset/restart counts (TPM2_ReadClock) say so, also across a swtpm killed and restarted.
      const info = await ensureEmulatedTpm(stateDir);
      const { openTpm } = await import('../tpm/index.js');
      const tpm = await openTpm(info.tcti);
      try {
        const c = await tpm.readClock();
        return `emulated-tpm-reset-${c.resetCount}.restart-${c.restartCount}`;
      } finally {
        await tpm.close();
      }
    },
  };
}
