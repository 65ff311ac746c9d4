/**
 * The command tree and the runner. Command files register their options and help eagerly and load
 * what their actions need when they run, so `--help` and a single command load little.
 */
import { Command, CommanderError, Option } from 'commander';
import { EXIT, HyperEnclaveError, oneLine } from '../errors.js';
import { fileSystemError } from '../platform/fs-errors.js';
import { lazyLogger, logColorFor, logFormatFor, logLevelFromEnv, setLogger, underJournald } from '../log.js';
import { cliVersion } from './version.js';
import { invokedGroup, registerCommands } from './commands/index.js';
import type { GlobalOptions } from './output.js';

/**
 * The command tree. With `argv` (as process.argv), only the command group it invokes is loaded
 * (every group for --help, help, completion or an unknown command); without, every group.
 */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  const program = new Command('hyperenclave')
    .description('Manage a Type-1.5 confidential-computing hypervisor: measured load, TPM attestation, enclave VMs')
    .version(cliVersion())
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
  program.hook('preAction', async (_this, action) => {
    const g = action.optsWithGlobals<GlobalOptions>();
    const level = g.verbose ? 'debug' : g.quiet ? 'error' : (logLevelFromEnv() ?? 'warn');
    setLogger(lazyLogger(level, { format: logFormatFor(), color: logColorFor(g.color) }));
    // A malformed --tcti is a bad option (exit 2), refused before any command runs.
    if (g.tcti) {
      const { parseTcti } = await import('../tpm/tcti.js');
      try {
        parseTcti(g.tcti);
      } catch (e) {
        throw new HyperEnclaveError(`--tcti: ${(e as Error).message}`, EXIT.USAGE);
      }
    }
  });
  const valueOptions = new Set(program.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short].filter((n): n is string => !!n)));
  await registerCommands(program, argv ? invokedGroup(argv.slice(2), valueOptions) : undefined);
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
  const program = await buildProgram(argv);
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
      process.stderr.write(errorLine(oneLine(e.message)));
      if (verbose && e.cause) process.stderr.write(`  cause: ${e.cause instanceof Error ? e.cause.stack : String(e.cause)}\n`);
      return e.exitCode;
    }
    const err = e as NodeJS.ErrnoException;
    const fsErr = fileSystemError(e);
    if (fsErr) {
      process.stderr.write(errorLine(fsErr.message));
      return fsErr.exitCode;
    }
    if (err && typeof err.code === 'string' && err.path) {
      process.stderr.write(errorLine(`${err.path}: ${err.message.replace(/^[A-Z]+: /, '')}`));
      return err.code === 'ENOENT' ? EXIT.NOT_FOUND : EXIT.BAD_INPUT;
    }
    process.stderr.write(errorLine(`internal error: ${err?.message ?? String(e)}`));
    if (verbose) process.stderr.write(`${err?.stack ?? ''}\n`);
    return EXIT.INTERNAL;
  }
}
