import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, errorLineProblem, repoRoot, runCli } from '../helpers/cli.js';
import { commandMissing, skipUnless } from '../helpers/require.js';
import { EventLogAppender, parseEventLog } from '../../src/eventlog/index.js';
import { runtimeLogPath } from '../../src/platform/logs.js';

/**
 * A log cut short. A firmware log ending inside an event has lost measurements: `eventlog replay`
 * refuses it (exit 6, naming the offset) as tpm2_eventlog does, unless --allow-torn-tail, which
 * replays the complete events (the PCRs tpm2_eventlog computes for the log cut at the last
 * record boundary). Our own runtime log keeps its crash tolerance: a torn last record is ignored.
 */
const missing = skipUnless('eventlog replay of logs cut short', [['cli', cliMissing()], ['tpm2-tools', commandMissing('tpm2_eventlog', 'tpm2-tools')]]);
const fixture = join(repoRoot, 'test/fixtures/eventlog/go-tpm-tools-ubuntu-2104-no-secure-boot.bin');

describe.skipIf(!!missing)('eventlog replay of a log that ends inside an event (built CLI as a process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'he-torn-'));
  const state = join(dir, 'state');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a]);

  const full = readFileSync(fixture);
  const log = parseEventLog(full);
  const last = log.events[log.events.length - 1]!;
  const boundary = last.offset; // the last event starts here
  const torn = join(dir, 'torn.bin');
  const whole = join(dir, 'complete-events.bin');
  writeFileSync(torn, full.subarray(0, boundary + 20)); // 20 bytes into the last event
  writeFileSync(whole, full.subarray(0, boundary));

  it('a firmware log cut mid-event is refused with the offset (exit 6), as tpm2_eventlog refuses it', async () => {
    expect(log.format).toBe('crypto-agile');
    const peer = spawnSync('tpm2_eventlog', [torn], { encoding: 'utf8' });
    expect(peer.status).not.toBe(0);
    const r = await run('eventlog', 'replay', torn, '--json');
    expect(r.code).toBe(6);
    expect(errorLineProblem(r)).toBeUndefined();
    expect(r.stderr).toContain(`${torn}: the log ends inside an event: 20 bytes at offset ${boundary} (0x${boundary.toString(16)}) do not complete a record`);
    expect(r.stdout).toBe('');
  });

  it('--allow-torn-tail replays the complete events: the PCRs tpm2_eventlog gives for the log cut at the record boundary', async () => {
    const r = await run('eventlog', 'replay', torn, '--allow-torn-tail', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`${torn}: the log ends inside an event: 20 bytes at offset ${boundary}`);
    const peer = spawnSync('tpm2_eventlog', [whole], { encoding: 'utf8' });
    expect(peer.status, peer.stderr).toBe(0);
    const ours = (r.json as unknown as { pcrs: Record<string, Record<string, string>> }).pcrs;
    const section = peer.stdout.slice(peer.stdout.indexOf('pcrs:'));
    let compared = 0;
    for (const [bank, pcrs] of Object.entries(ours)) {
      for (const [i, v] of Object.entries(pcrs)) {
        const m = new RegExp(`^\\s{2}${bank}:\\s*$[\\s\\S]*?^\\s+${i}\\s*:\\s*0x([0-9A-Fa-f]+)`, 'm').exec(section);
        expect(m?.[1]?.toLowerCase(), `${bank}:${i}`).toBe(v);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(8);
  });

  it('our runtime log with a torn last record (a crash mid-append) still replays, by default and when named', async () => {
    mkdirSync(state, { recursive: true });
    const path = runtimeLogPath(state);
    const a = await EventLogAppender.open(path, { banks: ['sha256'] });
    await a.append({ pcr: 12, type: 'EV_IPL', data: Buffer.from('first') });
    await a.close();
    appendFileSync(path, Buffer.from([12, 0, 0, 0, 0x0d, 0, 0])); // a record header cut short
    expect(parseEventLog(readFileSync(path), { allowTornTail: true }).tornTail?.length).toBe(7);
    const byDefault = await run('eventlog', 'replay', '--json');
    expect(byDefault.code, byDefault.stderr).toBe(0);
    const named = await run('eventlog', 'replay', path, '--json');
    expect(named.code, named.stderr).toBe(0);
    expect(named.stderr).toBe('');
    expect(named.json).toEqual(byDefault.json);
  });
});
