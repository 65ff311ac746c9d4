#!/usr/bin/env node
/**
 * The `hyperenclave` executable. `--version` is answered here without loading anything else;
 * everything else loads the command tree (program.ts), whose commands load their own modules.
 */
import { realpathSync } from 'node:fs';
import { cliVersion } from './version.js';

const entry = process.argv[1];
const invokedDirectly = entry !== undefined && import.meta.url === new URL(`file://${realpathSync(entry)}`).href;
if (invokedDirectly) {
  // `hyperenclave … | head`: a closed pipe ends the output quietly, as coreutils and tpm2-tools do.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw e;
  });
  const args = process.argv.slice(2);
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
    process.stdout.write(`${cliVersion()}\n`);
  } else {
    const { main } = await import('./program.js');
    process.exitCode = await main(process.argv);
  }
}
