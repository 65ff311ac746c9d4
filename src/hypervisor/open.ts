import type { Platform } from '../platform/index.js';
import type { HypervisorClient } from './client.js';
import { EmulatedHypervisorClient } from './emulated-client.js';
import { LinuxHypervisorClient } from './linux-client.js';

/**
 * The client for a platform's hypervisor transport. service: connects to (and, unless
 * `start: false`, starts) the emulated service of its state directory; device: opens /dev/hyperenclave.
 */
export async function openHypervisor(platform: Pick<Platform, 'hypervisorTransport'>, opts: { start?: boolean } = {}): Promise<HypervisorClient> {
  const t = platform.hypervisorTransport;
  if (t.via === 'device') return LinuxHypervisorClient.open();
  return EmulatedHypervisorClient.connect(t.stateDir, opts);
}

/** Stops the emulated service (no-op for the device). Returns whether one was running. */
export async function stopHypervisor(platform: Pick<Platform, 'hypervisorTransport'>): Promise<boolean> {
  const t = platform.hypervisorTransport;
  if (t.via === 'device') return false;
  return EmulatedHypervisorClient.stop(t.stateDir);
}
