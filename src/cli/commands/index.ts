import type { Command } from 'commander';
import { registerEmulator } from './emulator.js';
import { registerFirmware } from './firmware.js';
import { registerCompletion } from './completion.js';
import { registerPlatform } from './platform.js';

/** Every command group registers itself here; each lives in its own file. */
export function registerCommands(program: Command): void {
  registerPlatform(program);
  registerFirmware(program);
  registerEmulator(program);
  // Last: it describes every command registered before it.
  registerCompletion(program);
}
