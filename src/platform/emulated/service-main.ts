/**
 * Entry of the emulated hypervisor service process (started detached by
 * ensureHypervisorService): `node service-main.js --state-dir DIR [--memory-map machine|synthetic]`.
 */
import { loadCore } from '../../hypervisor/core-binding.js';
import { runService } from './service-process.js';
import { fileSystemError } from '../../fs/fs-errors.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const stateDir = arg('--state-dir');
const memoryMap = arg('--memory-map');
const epcMiB = arg('--epc-mib') ? Number(arg('--epc-mib')) : undefined;
if (epcMiB !== undefined && (!Number.isInteger(epcMiB) || epcMiB < 1 || epcMiB > 4096)) {
  console.error(`service-main: --epc-mib ${arg('--epc-mib')} is not an integer in 1..4096`);
  process.exit(2);
}
if (!stateDir) {
  console.error('service-main: --state-dir is required');
  process.exit(2);
}
try {
  await runService({ stateDir, core: loadCore, ...(epcMiB ? { epcMiB } : {}), ...(memoryMap === 'machine' || memoryMap === 'synthetic' ? { memoryMap } : {}) });
  console.error(`${new Date().toISOString()} emulated hypervisor service pid ${process.pid} ready (state ${stateDir})`);
} catch (e) {
  const err = fileSystemError(e) ?? (e as Error & { exitCode?: number });
  console.error(`${new Date().toISOString()} emulated hypervisor service failed: ${err.message}`);
  process.exit(typeof err.exitCode === 'number' ? err.exitCode : 1);
}
