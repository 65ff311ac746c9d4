import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli, schemaProblems, writeEmulatedVerifierPolicy } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { parseEventLog } from '../../src/eventlog/index.js';
import { hostImageArch } from '../helpers/arch.js';
import { commandMissing, skipUnless } from '../helpers/require.js';


const missing = skipUnless('CLI attestation tests', [['cli', cliMissing()], ['swtpm', swtpmAvailable({ ek: true })]]);
const hasTools = !missing && !skipUnless('the tpm2_checkquote interop assertion', [['tpm2-tools', commandMissing('tpm2_checkquote', 'tpm2-tools')]]);

/**
 * The operator and verifier sides as separate processes, through files only:
 * measure → ak create → enrollment (4 steps) → attest → verify, and the refusals.
 */
describe.skipIf(!!missing)('attestation through the CLI on the emulated platform', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-cli-att-'));
  const f = (n: string) => join(state, n);
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });
  const nonce = randomBytes(16).toString('hex');
  let img = '';
  beforeAll(async () => {
    img = f('hv.img');
    const b = await run('firmware', 'build', join(repoRoot, 'test/fixtures/measure/tiny.elf'), '-o', img, '--arch', hostImageArch());
    expect(b.code, b.stderr).toBe(0);
  });
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it('measure extends PCR 12 and firmware reference predicts it', async () => {
    const m = await run('measure', img, '--json');
    expect(m.code, m.stderr).toBe(0);
    expect(schemaProblems(m.json!)).toBeUndefined();
    const r = await run('firmware', 'reference', img, '-o', f('reference-values.json'), '--json');
    expect(r.code, r.stderr).toBe(0);
    const ref = JSON.parse(readFileSync(f('reference-values.json'), 'utf8'));
    expect((m.json!.pcrs as Record<string, Record<string, string>>).sha256!['12']).toBe(ref.pcrs.sha256['12']);
    const show = await run('eventlog', 'show', join(state, 'runtime-measurements.log'), '--json');
    expect(show.code, show.stderr).toBe(0);
    expect(schemaProblems(show.json!)).toBeUndefined();
  });

  it('enrolls the AK by credential activation, attests, and the verifier affirms', async () => {
    const ak = await run('ak', 'create', '--json');
    expect(ak.code, ak.stderr).toBe(0);
    expect(schemaProblems(ak.json!)).toBeUndefined();
    writeEmulatedVerifierPolicy(state, f('.'));
    for (const args of [
      ['ak', 'enroll', '--request', f('req.json')],
      ['verifier', 'enroll', '--policy', f('policy.json'), '--request', f('req.json'), '--challenge', f('ch.json')],
      ['ak', 'enroll', '--challenge', f('ch.json'), '--answer', f('ans.json')],
      ['verifier', 'enroll', '--policy', f('policy.json'), '--answer', f('ans.json')],
    ]) {
      const r = await run(...args, '--json');
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(schemaProblems(r.json!)).toBeUndefined();
    }
    const a = await run('attest', '--nonce', nonce, '--out', f('ev.json'), '--pcrs', 'sha256:0-7,12', '--tpm2-tools', f('q'), '--json');
    expect(a.code, a.stderr).toBe(0);
    expect(schemaProblems(a.json!)).toBeUndefined();
    const v = await run('verify', f('ev.json'), '--policy', f('policy.json'), '--nonce', nonce, '--jwt', f('result.jwt'), '--json');
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(schemaProblems(v.json!)).toBeUndefined();
    expect(v.json!['ear.status']).toBe('affirming');
    expect(readFileSync(f('result.jwt'), 'utf8').split('.').length).toBe(3);
    if (hasTools) {
      const q = readFileSync(join(f('q'), 'qualification.hex'), 'utf8').trim();
      const c = spawnSync('tpm2_checkquote', ['-u', 'ak.pem', '-m', 'quote-sha256.msg', '-s', 'quote-sha256.sig', '-f', 'quote-sha256.pcrs', '-q', q, '-g', 'sha256'], { cwd: f('q'), encoding: 'utf8' });
      expect(c.status, c.stderr).toBe(0);
    }
  });

  it('refuses a wrong nonce and a log with an event removed, each by the named check (exit 4)', async () => {
    const wrong = await run('verify', f('ev.json'), '--policy', f('policy.json'), '--nonce', randomBytes(16).toString('hex'), '--json');
    expect(wrong.code).toBe(4);
    expect(JSON.stringify(wrong.json ?? wrong.stdout)).toMatch(/nonce/);
    const ev = JSON.parse(readFileSync(f('ev.json'), 'utf8'));
    // Remove the last runtime event (the signer measurement): the log no longer reaches PCR 12.
    const log = Buffer.from(ev.eventLogs.runtime, 'base64');
    const parsed = parseEventLog(log);
    ev.eventLogs.runtime = log.subarray(0, parsed.events[parsed.events.length - 1]!.offset).toString('base64');
    writeFileSync(f('ev-bad.json'), JSON.stringify(ev));
    const bad = await run('verify', f('ev-bad.json'), '--policy', f('policy.json'), '--nonce', nonce);
    expect(bad.code).toBe(4);
    expect(bad.stdout).toMatch(/eventlog\.runtime\s+FAIL/);
  });

  it('verifies tpm2-tools files with the same named checks; the already accepted quote is refused as a replay', async () => {
    const v = await run(
      'verify',
      '--tpm2-quote-message', join(f('q'), 'quote-sha256.msg'),
      '--tpm2-quote-signature', join(f('q'), 'quote-sha256.sig'),
      '--tpm2-quote-pcrs', join(f('q'), 'quote-sha256.pcrs'),
      '--ak-public', join(f('q'), 'ak.pem'),
      '--nonce', readFileSync(join(f('q'), 'qualification.hex'), 'utf8').trim(),
      '--json',
    );
    // the same TPM quote as ev.json, which this verifier state already accepted: refused as a replay (exit 4)
    expect(v.code, v.stderr).toBe(4);
    const doc = JSON.parse(v.stdout) as { schema: string; checks: { name: string; status: string; reason: string }[] };
    expect(schemaProblems(doc)).toBeUndefined();
    const checks = doc.checks.filter((c) => ['signature', 'pcr.digest', 'nonce', 'clock'].includes(c.name));
    expect(checks.map((c) => `${c.name}:${c.status}`)).toEqual(['signature:pass', 'nonce:pass', 'pcr.digest:pass', 'clock:fail']);
    expect(doc.checks.find((c) => c.name === 'clock')!.reason).toMatch(/not newer than the last accepted/);
    expect((await run('verify', '--tpm2-quote-message', 'm')).code).toBe(2);
  });
});
