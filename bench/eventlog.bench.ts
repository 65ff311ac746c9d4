/**
 * Event logs: parse + replay of a large (100k-event) crypto-agile log written by our writer,
 * in-process and as a process (our CLI when it has `eventlog replay`, else `node -e` importing
 * the compiled module), against `tpm2_eventlog FILE` on the same file.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, medianMs, speedup, type BenchRow } from './harness.js';
import { parseEventLog, replay, writeEventLog, type EventInput } from '../src/eventlog/index.js';
import { runTpm2Eventlog } from '../src/eventlog/tpm2-eventlog.js';

const EVENTS = 100_000;
const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '../src/cli/main.js');
const moduleUrl = join(here, '../src/eventlog/index.js');

/** UEFI_VARIABLE_DATA for a variable of EFI_GLOBAL_VARIABLE. */
function variable(name: string, data: Buffer): Buffer {
  const head = Buffer.alloc(32);
  Buffer.from('61dfe48bca93d211aa0d00e098032b8c', 'hex').copy(head, 0);
  head.writeBigUInt64LE(BigInt(name.length), 16);
  head.writeBigUInt64LE(BigInt(data.length), 24);
  return Buffer.concat([head, Buffer.from(name, 'utf16le'), data]);
}

/** UEFI_IMAGE_LOAD_EVENT with a HD(…)/\EFI\… device path. */
function imageLoad(i: number): Buffer {
  const file = Buffer.from(`\\EFI\\hyperenclave\\component${i}.efi\0`, 'utf16le');
  const fileNode = Buffer.concat([Buffer.from([4, 4, 0, 0]), file]);
  fileNode.writeUInt16LE(fileNode.length, 2);
  const dp = Buffer.concat([fileNode, Buffer.from([0x7f, 0xff, 4, 0])]);
  const head = Buffer.alloc(32);
  head.writeBigUInt64LE(BigInt(0x1000000 + i * 4096), 0);
  head.writeBigUInt64LE(65536n, 8);
  head.writeBigUInt64LE(BigInt(dp.length), 24);
  return Buffer.concat([head, dp]);
}

/** A firmware-like mix of well-formed events (strings, UEFI variables, image loads, separators) over PCRs 0-14. */
export function largeLog(): Buffer {
  const events: EventInput[] = [];
  for (let i = 0; i < EVENTS; i++) {
    const pcr = i % 15;
    switch (i % 6) {
      case 0:
        // EV_IPL in PCR 8 (grub's command lines), where tpm2_eventlog expects it.
        events.push({ pcr: 8, type: 'EV_IPL', data: Buffer.from(`grub_cmd: linux /boot/vmlinuz-${i} root=/dev/sda1 ${'x'.repeat(i % 64)}\0`) });
        break;
      case 1:
        events.push({ pcr, type: 'EV_EFI_ACTION', data: Buffer.from('Calling EFI Application from Boot Option') });
        break;
      case 2:
        events.push({ pcr, type: 'EV_POST_CODE', data: Buffer.from(`POST CODE ${i}`) });
        break;
      case 3:
        events.push({ pcr, type: 'EV_EFI_VARIABLE_DRIVER_CONFIG', data: variable(`Var${i}`, Buffer.from([i & 0xff])) });
        break;
      case 4:
        events.push({ pcr, type: 'EV_SEPARATOR', data: Buffer.alloc(4) });
        break;
      default:
        events.push({ pcr, type: 'EV_EFI_BOOT_SERVICES_APPLICATION', data: imageLoad(i) });
    }
  }
  return writeEventLog({ specId: { banks: ['sha1', 'sha256'] }, events });
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr?.toString().slice(0, 300)}`);
}

function cliHasReplay(): boolean {
  return spawnSync(process.execPath, [cli, 'eventlog', 'replay', '--help'], { stdio: 'ignore' }).status === 0;
}

export default async function bench(): Promise<BenchRow[]> {
  if (!hasCommand('tpm2_eventlog')) throw new Error('eventlog bench needs tpm2_eventlog (apt-get install tpm2-tools)');
  const dir = mkdtempSync(join(tmpdir(), 'eventlog-bench-'));
  try {
    const buf = largeLog();
    const file = join(dir, 'large.bin');
    writeFileSync(file, buf);

    // Same answer first: every PCR tpm2_eventlog reports equals our replay.
    const theirs = runTpm2Eventlog(file);
    const ours = replay(parseEventLog(buf));
    for (const [bank, pcrs] of Object.entries(theirs.pcrs)) {
      for (const [pcr, v] of Object.entries(pcrs)) if (ours.get(bank)?.get(Number(pcr))?.toString('hex') !== v) throw new Error(`bench log: PCR ${pcr} ${bank} differs from tpm2_eventlog`);
    }
    if (theirs.events.length !== EVENTS + 1) throw new Error(`tpm2_eventlog saw ${theirs.events.length} events`);

    const anchor = await medianMs(3, () => run('tpm2_eventlog', [file]));
    const inProc = await medianMs(5, () => replay(parseEventLog(buf)));
    const viaCli = cliHasReplay();
    const replayProc = viaCli
      ? await medianMs(3, () => run(process.execPath, [cli, 'eventlog', 'replay', file, '--json']))
      : await medianMs(3, () =>
          run(process.execPath, [
            '--input-type=module',
            '-e',
            `import { readFileSync } from 'node:fs'; import { parseEventLog, replay, replayToJson } from ${JSON.stringify(moduleUrl)};
             process.stdout.write(JSON.stringify(replayToJson(replay(parseEventLog(readFileSync(${JSON.stringify(file)}))))));`,
          ]),
        );
    // Full per-event output (what tpm2_eventlog prints): JSON of every event, decoded, plus the PCRs.
    const showProc = await medianMs(3, () =>
      run(process.execPath, [
        '--input-type=module',
        '-e',
        `import { readFileSync } from 'node:fs'; import { eventLogToJson, parseEventLog, replay, replayToJson } from ${JSON.stringify(moduleUrl)};
         const log = parseEventLog(readFileSync(${JSON.stringify(file)}));
         process.stdout.write(JSON.stringify({ log: eventLogToJson(log), pcrs: replayToJson(replay(log)) }));`,
      ]),
    );

    const anchorRow = { label: 'tpm2_eventlog FILE', value: anchor, unit: 'ms', scope: 'process' as const };
    const target = '>= 1 (at least as fast as tpm2_eventlog)';
    const note = `${EVENTS.toLocaleString('en')} events, sha1+sha256, ${(buf.length / 1048576).toFixed(1)} MiB`;
    const met = (ours: number) => speedup(ours, anchor, false) >= 1;
    return [
      // The headline: both sides whole processes printing the same thing (every event decoded + the final PCRs).
      {
        name: 'every event decoded + final PCRs, 100k events',
        ours: { label: 'node + compiled eventlog module: eventLogToJson + replayToJson', value: showProc, unit: 'ms', scope: 'process' },
        anchor: anchorRow,
        ratio: speedup(showProc, anchor, false),
        higherIsBetter: false,
        target,
        met: met(showProc),
        note: `${note}; same output scope as tpm2_eventlog (every event + final PCRs)`,
        headline: true,
      },
      {
        name: 'parse + replay 100k events (PCRs only)',
        ours: { label: viaCli ? 'hyperenclave eventlog replay FILE --json' : 'node -e (dist eventlog module) replay --json', value: replayProc, unit: 'ms', scope: 'process' },
        anchor: anchorRow,
        ratio: speedup(replayProc, anchor, false),
        higherIsBetter: false,
        note: `${note}; narrower output than tpm2_eventlog (final PCRs, no per-event output)${viaCli ? '' : '; CLI has no eventlog replay, so a node -e script importing the compiled module'}`,
      },
      {
        name: 'parse + replay 100k events (PCRs only)',
        ours: { label: 'parseEventLog + replay', value: inProc, unit: 'ms', scope: 'in-process' },
        anchor: anchorRow,
        ratio: speedup(inProc, anchor, false),
        higherIsBetter: false,
        note: `${note}; ours without process start-up and without output`,
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
