/**
 * CLI start-up, exec to exit: `hyperenclave --version` and `hyperenclave --help` against
 * `node -e 0` (Node's own start-up, the floor of any Node CLI). Target for --version: at most
 * 1.3x node -e 0.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processMs, speedup, type BenchRow } from './harness.js';

const RUNS = 30;
const cli = join(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');

export default async function bench(): Promise<BenchRow[]> {
  const node = await processMs(RUNS, process.execPath, ['-e', '0']);
  const version = await processMs(RUNS, process.execPath, [cli, '--version']);
  const help = await processMs(RUNS, process.execPath, [cli, '--help']);
  const anchor = { label: 'node -e 0', value: node, unit: 'ms', scope: 'process' as const };
  return [
    {
      name: 'hyperenclave --version, exec to exit',
      ours: { label: 'hyperenclave --version', value: version, unit: 'ms', scope: 'process' },
      anchor,
      ratio: speedup(version, node, false),
      higherIsBetter: false,
      target: '<= 1.3x node -e 0 (speed-up >= 0.77)',
      met: version <= 1.3 * node,
      note: `median of ${RUNS}; answered before any module of the CLI is loaded`,
      headline: true,
    },
    {
      name: 'hyperenclave --help, exec to exit',
      ours: { label: 'hyperenclave --help', value: help, unit: 'ms', scope: 'process' },
      anchor,
      ratio: speedup(help, node, false),
      higherIsBetter: false,
      note: `median of ${RUNS}; loads commander and every command file (their heavy modules are loaded by the actions)`,
    },
  ];
}
