#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { EXIT, HyperEnclaveError } from '../errors.js';
import { createLogger, logColorFor, logFormatFor, logLevelFromEnv, setLogger, underJournald } from '../log.js';
import { registerCommands } from './commands/index.js';
import { parseTcti } from '../tpm/tcti.js';
import type { GlobalOptions } from './output.js';

export function buildProgram(): Command {
  const program = new Command('hyperenclave')
    .description('Manage a Type-1.5 confidential-computing hypervisor: measured load, TPM attestation, enclave VMs')
    .version(process.env.npm_package_version ?? '0.1.0')
    .addOption(new Option('--platform <kind>', 'linux, emulated or auto').default('auto'))
    .option('--config <file>', 'configuration file (default /etc/hyperenclave/config.json)')
    .option('--state-dir <dir>', 'state directory (default /var/lib/hyperenclave as root)')
    .option('--tcti <tcti>', 'TPM: swtpm:host=H,port=P | swtpm:path=SOCK | device:/dev/tpmrm0 (env HYPERENCLAVE_TCTI, TPM2TOOLS_TCTI)')
    .option('--json', 'machine-readable output (every reporting command)')
    .option('-v, --verbose', 'log details to stderr')
    .option('-q, --quiet', 'print only errors')
    .option('--no-color', 'no colours in output')
    .addHelpText(
      'after',
      '\nExample:\n  hyperenclave platform\n  hyperenclave --platform emulated --state-dir /tmp/he demo\n  hyperenclave <command> --help',
    )
    // Commander's usage errors as one line, like every other error (subcommands inherit this).
    .configureOutput({ outputError: (str, write) => write(`hyperenclave: ${str.trim().replace(/^error: /, '')} (run with --help for usage)\n`) })
    .exitOverride();
  program.hook('preAction', (_this, action) => {
    const g = action.optsWithGlobals<GlobalOptions>();
    const level = g.verbose ? 'debug' : g.quiet ? 'error' : (logLevelFromEnv() ?? 'warn');
    setLogger(createLogger(level, { format: logFormatFor(), color: logColorFor(g.color) }));
    // A malformed --tcti is a bad option (exit 2), refused before any command runs.
    if (g.tcti) {
      try {
        parseTcti(g.tcti);
      } catch (e) {
        throw new HyperEnclaveError(`--tcti: ${(e as Error).message}`, EXIT.USAGE);
      }
    }
  });
  registerCommands(program);
  return program;
}

/**
 * The one error line of a failed run. Under journald (the boot unit) it carries the sd-daemon
 * "<3>" prefix, so `journalctl -p err` finds it; on a terminal or a pipe it is printed as is.
 */
export function errorLine(msg: string, env: NodeJS.ProcessEnv = process.env): string {
  return `${underJournald(env) ? '<3>' : ''}hyperenclave: ${msg.replace(/\s*\n\s*/g, ' ')}\n`;
}

/** Runs the CLI; resolves to the process exit code. Bad input never prints a stack trace. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const verbose = argv.includes('--verbose') || argv.includes('-v');
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return EXIT.OK;
      return EXIT.USAGE;
    }
    if (e instanceof HyperEnclaveError) {
      process.stderr.write(errorLine(e.message));
      if (verbose && e.cause) process.stderr.write(`  cause: ${e.cause instanceof Error ? e.cause.stack : String(e.cause)}\n`);
      return e.exitCode;
    }
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string' && err.path) {
      process.stderr.write(errorLine(`${err.path}: ${err.message.replace(/^[A-Z]+: /, '')}`));
      return err.code === 'ENOENT' ? EXIT.NOT_FOUND : EXIT.BAD_INPUT;
    }
    process.stderr.write(errorLine(`internal error: ${err?.message ?? String(e)}`));
    if (verbose) process.stderr.write(`${err?.stack ?? ''}\n`);
    return EXIT.INTERNAL;
  }
}

const invokedDirectly = process.argv[1] && import.meta.url === new URL(`file://${(await import('node:fs')).realpathSync(process.argv[1])}`).href;
if (invokedDirectly) {
  // `hyperenclave … | head`: a closed pipe ends the output quietly, as coreutils and tpm2-tools do.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK);
    throw e;
  });
  const code = await main(process.argv);
  process.exitCode = code;
}
