import type { Command } from 'commander';
import { registerEmulator } from './emulator.js';
import { registerFirmware } from './firmware.js';

/** Every command group registers itself here; each lives in its own file. */
export function registerCommands(program: Command): void {
  registerFirmware(program);
  registerEmulator(program);
}
