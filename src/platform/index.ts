import { existsSync, readFileSync } from 'node:fs';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { resolveStateDir } from './state.js';
import { ensureEmulatedTpm } from './emulated/tpm-daemon.js';
import { tctiFromEnv } from '../tpm/tcti.js';

export type PlatformKind = 'linux' | 'emulated';

/** How the hypervisor is reached: the kernel driver's device, or the emulated service of a state directory. */
export type HypervisorTransport = { readonly via: 'device' } | { readonly via: 'service'; readonly stateDir: string };

/**
 * Where things run. Everything platform-specific is reached through this: the code outside
 * src/platform asks for a capability, it never compares `kind`.
 */
export interface Platform {
  readonly kind: PlatformKind;
  readonly stateDir: string;
  /** The hypervisor's transport (src/hypervisor/open.ts opens the client for it). */
  readonly hypervisorTransport: HypervisorTransport;
  /**
   * Who extends the hypervisor image's PCR: `driver` (the kernel module measures what it loads,
   * so the image event is its extension) or `tool` (this tool extends it, then loads).
   */
  readonly imageMeasuredBy: 'driver' | 'tool';
  /**
   * The dynamic launch: `emulated` (this tool performs it against the TPM, src/txt/drtm.ts) or
   * `firmware` (tboot/SINIT performs it before Linux; `hyperenclave platform` reports it from the
   * TXT registers and heap, src/txt/platform.ts).
   */
  readonly drtm: 'emulated' | 'firmware';
  /** What this host claims to be in its evidence (the verifier trusts the EK certificate, not this). */
  readonly claimedKind: 'real' | 'emulated';
  /** Whether enabling the hypervisor demotes this host (false: the emulated service runs beside it). */
  readonly demotesHost: boolean;
  /** The emulated platform's long-lived parts (its TPM); absent on real hardware. */
  readonly emulator?: { readonly stateDir: string };
  /** The TCTI of this platform's own TPM (starting the emulated one if needed). */
  defaultTcti(): Promise<string>;
  /**
   * The TCTI a command uses, chosen once for every caller (CLI, boot, TPM): the flag, else
   * HYPERENCLAVE_TCTI / TPM2TOOLS_TCTI, else the configuration's `tcti`, else defaultTcti().
   */
  resolveTcti(flag?: string): Promise<string>;
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

/** flag > environment > configuration > the platform's own TPM (see Platform.resolveTcti). */
export async function resolveTcti(sources: { flag?: string | undefined; config?: string | undefined; env?: NodeJS.ProcessEnv }, platformDefault: () => Promise<string>): Promise<string> {
  return sources.flag || tctiFromEnv(sources.env ?? process.env) || sources.config || (await platformDefault());
}

export function openPlatform(opts: { platform?: string; stateDir?: string; tcti?: string } = {}): Platform {
  const wanted = opts.platform ?? (process.env.HYPERENCLAVE_PLATFORM || 'auto');
  let kind: PlatformKind;
  if (wanted === 'auto') kind = detectPlatformKind();
  else if (wanted === 'linux' || wanted === 'emulated') kind = wanted;
  else throw new HyperEnclaveError(`--platform: expected linux, emulated or auto, got "${wanted}"`, EXIT.USAGE);
  const stateDir = resolveStateDir(opts.stateDir);
  if (kind === 'linux') {
    const defaultTcti = async (): Promise<string> => {
      const dev = LINUX_TPM_DEVICES.find((d) => existsSync(d));
      if (!dev) throw new HyperEnclaveError('platform linux: no TPM device (/dev/tpmrm0, /dev/tpm0 absent)', EXIT.UNSUPPORTED);
      return `device:${dev}`;
    };
    return {
      kind,
      stateDir,
      hypervisorTransport: { via: 'device' },
      imageMeasuredBy: 'driver',
      drtm: 'firmware',
      claimedKind: 'real',
      demotesHost: true,
      defaultTcti,
      resolveTcti: (flag) => resolveTcti({ flag, config: opts.tcti }, defaultTcti),
      async bootId() {
        return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      },
    };
  }
  const defaultTcti = async (): Promise<string> => (await ensureEmulatedTpm(stateDir)).tcti;
  return {
    kind,
    stateDir,
    hypervisorTransport: { via: 'service', stateDir },
    imageMeasuredBy: 'tool',
    drtm: 'emulated',
    claimedKind: 'emulated',
    demotesHost: false,
    emulator: { stateDir },
    defaultTcti,
    resolveTcti: (flag) => resolveTcti({ flag, config: opts.tcti }, defaultTcti),
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
