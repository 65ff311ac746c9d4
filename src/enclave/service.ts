import type { Platform } from '../platform/index.js';
import type { EcallRequest, EnclaveSummary } from '../hypervisor/client.js';
import { withHypervisor } from '../hypervisor/service.js';
import type { BackendKind } from './backends/index.js';
import { type EnclaveRunResult, createEnclave, launchEnclave, runEnclave } from './lifecycle.js';
import { loadManifest, withBackend } from './manifest.js';
import { EnclaveError } from './errors.js';
import { EXIT } from '../errors.js';

/** Small service API for the CLI (`enclave create|run|list|destroy`). */

type Where = Pick<Platform, 'hypervisorTransport' | 'stateDir'>;

export interface EnclaveCommandOptions {
  backend?: BackendKind;
  policy?: number;
  /** Called as pages are added (bytes added so far, bytes in all). */
  onProgress?: (done: number, total: number) => void;
}

/** `enclave run <manifest>`: create → launch → ECALLs → destroy (unless keep). */
export function runEnclaveFromManifest(
  platform: Where,
  manifestPath: string,
  opts: EnclaveCommandOptions & { ecalls?: readonly (EcallRequest & { thread?: number })[]; keep?: boolean } = {},
): Promise<EnclaveRunResult> {
  const m = withBackend(loadManifest(manifestPath), opts.backend, opts.policy);
  return withHypervisor(platform, (c) =>
    runEnclave(c, m, {
      ...(opts.ecalls ? { ecalls: opts.ecalls } : {}),
      ...(opts.keep ? { keep: true } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    }),
  );
}

/** `enclave create <manifest>`: the enclave stays alive in the hypervisor (emulated: in the service). */
export function createEnclaveFromManifest(platform: Where, manifestPath: string, opts: EnclaveCommandOptions = {}): Promise<EnclaveSummary> {
  const m = withBackend(loadManifest(manifestPath), opts.backend, opts.policy);
  return withHypervisor(platform, async (c) => {
    const e = await createEnclave(c, m, opts.onProgress ? { onProgress: opts.onProgress } : {});
    if (c.traits.launchesPlainEnclaves || m.backend.kind !== 'none') {
      try {
        await launchEnclave(c, e.id, m.backend.kind, m.backend.policy);
      } catch (err) {
        await c.enclaveDestroy(e.id).catch(() => undefined);
        throw err;
      }
    }
    const list = await c.enclaveList();
    const made = list.find((x) => x.id === e.id);
    if (!made) throw new EnclaveError(`enclave ${m.name}: created as id ${e.id} but the hypervisor does not list it`, EXIT.INTERNAL);
    return c.traits.namesEnclaves ? made : { ...made, name: m.name };
  });
}

export function listEnclaves(platform: Where): Promise<EnclaveSummary[]> {
  return withHypervisor(platform, (c) => c.enclaveList());
}

/** Returns the EPC pages given back. */
export function destroyEnclaveById(platform: Where, id: number): Promise<number> {
  return withHypervisor(platform, (c) => c.enclaveDestroy(id));
}

/** `--ecall FN`, `--ecall FN:HEX` or `--ecall FN=TEXT` → an ECALL request. */
/** `FN`, `FN:HEX` or `FN=TEXT`, each optionally `FN@THREAD…` (thread index: which TCS enters). */
export function parseEcallSpec(spec: string): EcallRequest & { thread?: number } {
  const m = /^(\d{1,9})(?:@(\d{1,3}))?(?::([0-9a-fA-F]*)|=(.*))?$/s.exec(spec);
  if (!m) throw new EnclaveError(`--ecall "${spec}": expected FN, FN:HEX or FN=TEXT (FN@THREAD to pick the TCS)`, EXIT.USAGE);
  if (m[3] !== undefined && m[3].length % 2) throw new EnclaveError(`--ecall "${spec}": odd number of hex digits`, EXIT.USAGE);
  const input = m[3] !== undefined ? Buffer.from(m[3], 'hex') : m[4] !== undefined ? Buffer.from(m[4], 'utf8') : undefined;
  return { fn: Number(m[1]), ...(m[2] !== undefined ? { thread: Number(m[2]) } : {}), ...(input ? { input } : {}) };
}
