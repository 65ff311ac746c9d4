import type { Command } from 'commander';
import { registerEmulator } from './emulator.js';
import { registerFirmware } from './firmware.js';
import { registerCompletion } from './completion.js';
import { registerPlatform } from './platform.js';
import { registerTpm } from './tpm.js';
import { registerEventlog } from './eventlog.js';
import { registerAttest } from './attest.js';
import { registerFleet } from './fleet.js';
import { registerMeasure } from './measure.js';
import { registerHypervisor } from './hypervisor.js';

/** Every command group registers itself here; each lives in its own file. */
export function registerCommands(program: Command): void {
  registerPlatform(program);
  registerTpm(program);
  registerEventlog(program);
  registerHypervisor(program);
  registerMeasure(program);
  registerAttest(program);
  registerFleet(program);
  registerFirmware(program);
  registerEmulator(program);
  // Last: it describes every command registered before it.
  registerCompletion(program);
}
