import type { Command } from 'commander';
import { loadConfig, type HyperEnclaveConfig } from '../config/index.js';
import { openPlatform, type Platform } from '../platform/index.js';
import type { GlobalOptions } from './output.js';

/**
 * Global options, the configuration file and the platform they select, for a command's action.
 * Precedence: a flag on the command line, then HYPERENCLAVE_PLATFORM, then the configuration's
 * `platform` / `stateDir`, then auto-detection. The TPM follows the same order (Platform.resolveTcti). An explicit `--config` that is missing or invalid
 * is refused here, for every command; an absent default file means the built-in defaults.
 */
export function context(cmd: Command): { opts: GlobalOptions; platform: Platform; config: HyperEnclaveConfig } {
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  const config = loadConfig(opts.config);
  const platformFromCli = cmd.getOptionValueSourceWithGlobals('platform') === 'cli';
  const platform = platformFromCli ? opts.platform : (process.env.HYPERENCLAVE_PLATFORM || config.platform);
  const stateDir = opts.stateDir ?? config.stateDir;
  return { opts, config, platform: openPlatform({ ...(platform ? { platform } : {}), ...(stateDir ? { stateDir } : {}), ...(config.tcti ? { tcti: config.tcti } : {}) }) };
}
