import type { Platform } from '../platform/index.js';
import type { MemRangeSpec } from './abi.js';
import type { HypervisorClient, HypervisorStatus, LoadedImage } from './client.js';
import { openHypervisor } from './open.js';
import { logHypervisorExit } from './exit-event.js';

/** Small service API for the CLI (`load`, `enable`, `disable`, `status`; `stopHypervisor` in open.ts): each call opens and closes its client. */

type Where = Pick<Platform, 'hypervisorTransport' | 'stateDir'>;

export async function withHypervisor<T>(platform: Where, fn: (c: HypervisorClient) => Promise<T>, opts: { start?: boolean } = {}): Promise<T> {
  const c = await openHypervisor(platform, opts);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

export function hypervisorStatus(platform: Where): Promise<HypervisorStatus> {
  return withHypervisor(platform, (c) => c.status());
}

export function loadHypervisor(platform: Where, image: string, sha256: string): Promise<LoadedImage> {
  return withHypervisor(platform, (c) => c.load(image, sha256));
}

/**
 * Load (when `image` is given and nothing is loaded yet) and demote the host. Idempotent:
 * an already enabled hypervisor is left as it is. Returns the status afterwards.
 */
export function enableHypervisor(platform: Where, opts: { image?: { path: string; sha256: string }; memoryMap?: readonly MemRangeSpec[] } = {}): Promise<HypervisorStatus> {
  return withHypervisor(platform, async (c) => {
    let s = await c.status();
    if (!s.loaded && opts.image) await c.load(opts.image.path, opts.image.sha256);
    s = await c.status();
    if (!s.enabled) await c.enable(opts.memoryMap);
    return c.status();
  });
}

export function disableHypervisor(platform: Where): Promise<HypervisorStatus> {
  return withHypervisor(platform, async (c) => {
    if ((await c.status()).enabled) {
      await c.disable();
      // The bare-metal hypervisor capped its PCR before leaving (a refused cap refuses DISABLE):
      // log that extension. The emulated platform does not cap (docs/attestation.md).
      if (c.traits.capsPcrOnDisable && c.measurementPcr) await logHypervisorExit(platform.stateDir, await c.measurementPcr());
    }
    return c.status();
  });
}
