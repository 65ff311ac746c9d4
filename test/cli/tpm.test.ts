import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, runCli, schemaProblems } from '../helpers/cli.js';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../../src/platform/emulated/swtpm.js';
import { writeEventLog } from '../../src/eventlog/index.js';
import { commandMissing, skipUnless } from '../helpers/require.js';

const missing = skipUnless('CLI TPM tests', [['cli', cliMissing()], ['swtpm', swtpmAvailable()]]);
const hasTools = !missing && !skipUnless('the tpm2_pcrread cross-check', [['tpm2-tools', commandMissing('tpm2_pcrread', 'tpm2-tools')]]);

describe.skipIf(!!missing)('hyperenclave tpm / pcr / eventlog against swtpm (built CLI as a process)', () => {
  let tpm: SwtpmInstance;
  const dir = mkdtempSync(join(tmpdir(), 'he-cli-tpm-'));
  const run = (...a: string[]) => runCli(['--tcti', tpm.tcti, '--state-dir', dir, ...a]);
  beforeAll(async () => {
    tpm = await startSwtpm();
  });
  afterAll(async () => {
    await tpm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('tpm info names the manufacturer and the four banks', async () => {
    const r = await run('tpm', 'info', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(schemaProblems(r.json!)).toBeUndefined();
    expect(r.json!.manufacturer).toBe('IBM');
    expect((r.json!.banks as { name: string }[]).map((b) => b.name)).toEqual(['sha1', 'sha256', 'sha384', 'sha512']);
  });

  it('pcr extend --data then pcr read gives H(0 || H(data)) in each bank, and tpm2_pcrread agrees', async () => {
    const e = await run('pcr', 'extend', '16', '--data', 'hyperenclave', '--json');
    expect(e.code, e.stderr).toBe(0);
    expect(schemaProblems(e.json!)).toBeUndefined();
    const r = await run('pcr', 'read', '--bank', 'sha256', 'sha384', '--pcrs', '16', '--json');
    expect(schemaProblems(r.json!)).toBeUndefined();
    const banks = r.json!.banks as Record<string, Record<string, string>>;
    for (const [alg, size] of [['sha256', 32], ['sha384', 48]] as const) {
      const want = createHash(alg).update(Buffer.alloc(size)).update(createHash(alg).update('hyperenclave').digest()).digest('hex');
      expect(banks[alg]!['16']).toBe(want);
    }
    if (hasTools) {
      const t = spawnSync('tpm2_pcrread', ['-T', `swtpm:port=${tpm.port}`, 'sha256:16'], { encoding: 'utf8' });
      expect(t.stdout.toLowerCase()).toContain(banks.sha256!['16']);
    }
  });

  it('refuses PCR 17 at locality 0 with the decoded response code (exit 7), and bad arguments (exit 2)', async () => {
    const r = await run('pcr', 'extend', '17', '--data', 'x');
    expect(r.code).toBe(7);
    expect(r.stderr.trim()).toMatch(/^hyperenclave: TPM_RC_LOCALITY: PCR 17 cannot be extended at locality 0/);
    expect((await run('pcr', 'extend', '24', '--data', 'x')).code).toBe(2);
    expect((await run('pcr', 'read', '--bank', 'md5')).code).toBe(2);
    expect((await run('pcr', 'read', '--pcrs', '0-99')).code).toBe(2);
  });

  it('eventlog replay --compare matches a log of what we extended and names the PCR when it does not', async () => {
    await run('pcr', 'extend', '23', '--data', 'event-a');
    const log = join(dir, 'log.bin');
    const spec = { specId: { banks: ['sha1', 'sha256', 'sha384', 'sha512'] }, events: [] as { pcr: number; type: string; data: Buffer }[] };
    spec.events.push({ pcr: 16, type: 'EV_EVENT_TAG', data: Buffer.from('hyperenclave') }, { pcr: 23, type: 'EV_EVENT_TAG', data: Buffer.from('event-a') });
    writeFileSync(log, writeEventLog(spec));
    const ok = await run('eventlog', 'replay', log, '--compare', '--json');
    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    expect(schemaProblems(ok.json!)).toBeUndefined();
    await run('pcr', 'extend', '23', '--data', 'unlogged');
    const bad = await run('eventlog', 'replay', log, '--compare');
    expect(bad.code).toBe(4);
    expect(bad.stdout).toMatch(/PCR 23/);
  });
});
