import type { Command } from 'commander';
import { registerEmulator } from './emulator.js';

/** Every command group registers itself here; each lives in its own file. */
export function registerCommands(program: Command): void {
  registerEmulator(program);
}
