import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { emit, UsageError } from '../output.js';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import type { EventLog, ReplayResult, ReplayComparison } from '../../eventlog/index.js';
import { resolve } from 'node:path';
import { drtmLogPath, FIRMWARE_EVENT_LOG, runtimeLogPath } from '../../platform/logs.js';

/** What the actions need, loaded when one runs (not for --help or other commands). */
const lib = async () => ({ ...(await import('../context.js')), ...(await import('../../eventlog/index.js')), ...(await import('../../measure/runtime-events.js')) });

/** Logs named on the command line, or (none given) the firmware log plus our runtime log. */
function logPaths(files: string[], stateDir: string, platformKind: string): string[] {
  if (files.length) return files;
  const found = [FIRMWARE_EVENT_LOG, runtimeLogPath(stateDir)].filter((p) => existsSync(p));
  if (!found.length)
    throw new HyperEnclaveError(
      `eventlog: no FILE given and no log found (${platformKind === 'linux' ? FIRMWARE_EVENT_LOG + ', ' : ''}${runtimeLogPath(stateDir)})`,
      EXIT.NOT_FOUND,
    );
  return found;
}

/**
 * A log that ends inside an event. Our own logs (the runtime and DRTM logs in the state
 * directory) may: a crash mid-append leaves a torn record that the next append cuts off, so the
 * complete records are the log. Any other log (firmware, UEFI) cut short has lost measurements:
 * replaying what is left would hide them, so it is an error unless --allow-torn-tail.
 */
function checkTornTail(path: string, log: EventLog, stateDir: string, allow: boolean, quiet: boolean): void {
  const t = log.tornTail;
  if (!t) return;
  const ours = [runtimeLogPath(stateDir), drtmLogPath(stateDir)].map((p) => resolve(p)).includes(resolve(path));
  if (ours) return;
  const where = `${t.length} bytes at offset ${t.offset} (0x${t.offset.toString(16)})`;
  if (!allow)
    throw new HyperEnclaveError(`${path}: the log ends inside an event: ${where} do not complete a record; replay refused (--allow-torn-tail replays the complete events)`, EXIT.BAD_INPUT);
  if (!quiet) process.stderr.write(`hyperenclave: warning: ${path}: the log ends inside an event: ${where} ignored (--allow-torn-tail)\n`);
}

/** Replays logs in order: each continues from the PCR values the previous one left. */
function replayChain(logs: EventLog[], replay: typeof import('../../eventlog/replay.js').replay): ReplayResult {
  let result: ReplayResult | undefined;
  for (const log of logs) result = replay(log, result ? { initialValues: result } : {});
  return result!;
}

export function registerEventlog(program: Command): void {
  const ev = program
    .command('eventlog')
    .description('TCG event logs: show and replay (firmware, runtime, DRTM)')
    .addHelpText('after', '\nExample:\n  hyperenclave eventlog replay --compare');
  ev.command('show')
    .description('list events with PCR, type, digests and decoded data')
    .argument('[files...]', 'event log files (default: firmware log + runtime log)')
    .addHelpText('after', '\nExample:\n  hyperenclave eventlog show /sys/kernel/security/tpm0/binary_bios_measurements --json')
    .action(async (files: string[], _o, cmd: Command) => {
      const { context, readEventLogFile, eventLogToJson, formatEventLogText, checkHyperenclaveEvents } = await lib();
      const { opts, platform } = context(cmd);
      const paths = logPaths(files, platform.stateDir, platform.kind);
      if (opts.json && paths.length > 1) throw new UsageError('eventlog show --json: give one FILE');
      const logs = await Promise.all(paths.map((p) => readEventLogFile(p)));
      if (opts.json) emit(opts, eventLogToJson(logs[0]!, { dataChecks: checkHyperenclaveEvents }) as never, () => '');
      else process.stdout.write(logs.map((l, i) => `# ${paths[i]}\n${formatEventLogText(l, { dataChecks: checkHyperenclaveEvents })}`).join('\n') + '\n');
    });
  ev.command('replay')
    .description('PCR values the logs imply, per bank; with --compare, checked against the TPM\'s live PCRs')
    .argument('[files...]', 'event logs replayed in order (default: firmware log + runtime log)')
    .option('--compare', 'compare with the live PCRs of the TPM (--tcti or the platform\'s TPM)')
    .option('--allow-torn-tail', 'replay the complete events of a log that ends inside an event (our own runtime and DRTM logs always are)')
    .addHelpText('after', '\nExample:\n  hyperenclave eventlog replay fw.bin runtime.log --compare --tcti swtpm:port=2321')
    .action(async (files: string[], o: { compare?: boolean; allowTornTail?: boolean }, cmd: Command) => {
      const { context, readEventLogFile, compareReplay, replayToJson, formatReplayText, replay } = await lib();
      const { opts, platform } = context(cmd);
      const paths = logPaths(files, platform.stateDir, platform.kind);
      const logs = await Promise.all(paths.map((p) => readEventLogFile(p)));
      logs.forEach((l, i) => checkTornTail(paths[i]!, l, platform.stateDir, !!o.allowTornTail, !!opts.quiet));
      const result = replayChain(logs, replay);
      let comparison: ReplayComparison | undefined;
      if (o.compare) {
        const wanted = new Map<string, number[]>();
        for (const [bank, vals] of result) wanted.set(bank, [...vals.keys()]);
        const { readLivePcrs } = await import('../tpm-access.js');
        comparison = compareReplay(result, await readLivePcrs(platform, opts.tcti, wanted));
      }
      emit(opts, replayToJson(result, comparison) as never, () => formatReplayText(result, comparison));
      if (comparison && !comparison.ok) process.exitCode = EXIT.VERIFY_FAILED;
    });
}

