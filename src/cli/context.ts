import type { Command } from 'commander';
import { openPlatform, type Platform } from '../platform/index.js';
import type { GlobalOptions } from './output.js';

/** Global options plus the platform they select, for a command's action. */
export function context(cmd: Command): { opts: GlobalOptions; platform: Platform } {
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  return { opts, platform: openPlatform({ ...(opts.platform ? { platform: opts.platform } : {}), ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) }) };
}
