import type { Platform } from '../platform/index.js';
import type { HypervisorClient } from './client.js';
import { EmulatedHypervisorClient } from './emulated-client.js';
import { LinuxHypervisorClient } from './linux-client.js';

/**
 * The client for a platform. emulated: connects to (and, unless `start: false`, starts) the
 * service of platform.stateDir; linux: opens /dev/hyperenclave.
 */
export async function openHypervisor(platform: Pick<Platform, 'kind' | 'stateDir'>, opts: { start?: boolean } = {}): Promise<HypervisorClient> {
  if (platform.kind === 'linux') return LinuxHypervisorClient.open();
  return EmulatedHypervisorClient.connect(platform.stateDir, opts);
}

/** Stops the emulated service (no-op on linux). Returns whether one was running. */
export async function stopHypervisor(platform: Pick<Platform, 'kind' | 'stateDir'>): Promise<boolean> {
  if (platform.kind === 'linux') return false;
  return EmulatedHypervisorClient.stop(platform.stateDir);
}
