import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cliMissing,
  errorLineProblem,
  repoRoot,
  runCli,
  schemaProblems,
  startVerifierServe,
  stdoutJson,
  unusedLoopbackUrl,
  type ServedVerifier,
  writeEmulatedVerifierPolicy,
} from '../helpers/cli.js';
import { compileSchema } from '../../src/schemas.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { hostImageArch } from '../helpers/arch.js';
import { skipUnless } from '../helpers/require.js';

const missing = skipUnless('the remote-verifier CLI tests', [['cli', cliMissing()], ['swtpm', swtpmAvailable({ ek: true })]]);

const resultProblems = compileSchema('attestation-result.schema.json');

interface Verdict {
  status: string;
  result: { checks: { name: string; status: string }[]; nonce?: string } & Record<string, unknown>;
  jwt: string;
}

/**
 * The attester talks to `verifier serve` processes over HTTP: `ak enroll --verifier URL`
 * (credential activation against the emulated swtpm's EK certificate) and `attest --verifier URL`
 * (the verifier's nonce, the evidence, its verdict), with the refusals an operator meets.
 */
describe.skipIf(!!missing)('ak enroll --verifier and attest --verifier against verifier serve (built CLI as processes)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-remote-'));
  const strangerState = mkdtempSync(join(tmpdir(), 'he-remote-stranger-'));
  const f = (n: string) => join(state, n);
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 60_000 });
  let verifier: ServedVerifier | undefined;
  let stranger: ServedVerifier | undefined;
  let akName = '';

  beforeAll(async () => {
    const img = f('hv.img');
    for (const args of [
      ['firmware', 'build', join(repoRoot, 'test/fixtures/measure/tiny.elf'), '-o', img, '--arch', hostImageArch()],
      ['measure', img],
      ['firmware', 'reference', img, '-o', f('reference-values.json')],
    ]) {
      const r = await run(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    const ak = await run('ak', 'create', '--json');
    expect(ak.code, ak.stderr).toBe(0);
    akName = ak.json!.name as string;

    writeEmulatedVerifierPolicy(state, f('.'));
    // The verifier keeps its enrollments in <state-dir>/verifier; the stranger has its own, empty.
    [verifier, stranger] = await Promise.all([
      startVerifierServe(['--platform', 'emulated', '--state-dir', state], ['--policy', f('policy.json')]),
      startVerifierServe(['--platform', 'emulated', '--state-dir', strangerState], ['--policy', f('policy.json')], { json: true }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([verifier?.stop(), stranger?.stop()]);
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
    rmSync(strangerState, { recursive: true, force: true });
  });

  it('verifier serve --json prints its address as a hyperenclave/verifier-serve document', () => {
    const doc = JSON.parse(stranger!.stdout()) as { schema: string; url: string };
    expect(schemaProblems(doc)).toBeUndefined();
    expect(doc.url).toBe(stranger!.url);
  });

  it('ak enroll --verifier URL: credential activation over HTTP, an enrolled record for this AK', async () => {
    const r = await run('ak', 'enroll', '--verifier', verifier!.url, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(schemaProblems(r.json!)).toBeUndefined();
    expect(r.json!.verifier).toBe(`${verifier!.url}/`);
    const enrolled = r.json!.enrolled as { akName: string; method: string; enrolledAt: string };
    expect(enrolled).toMatchObject({ akName, method: 'credential-activation' });
    expect(Date.parse(enrolled.enrolledAt)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('attest --verifier URL: the verifier\'s nonce, the evidence, and its verdict: affirming', async () => {
    const r = await run('attest', '--verifier', verifier!.url, '--out', f('ev.json'), '--pcrs', 'sha256:0-7,12', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(schemaProblems(r.json!)).toBeUndefined();
    expect(r.json!.verifier).toBe(`${verifier!.url}/`);
    const verdict = r.json!.verdict as Verdict;
    expect(verdict.status, JSON.stringify(verdict.result.firstFailure)).toBe('affirming');
    expect(resultProblems(verdict.result)).toBeUndefined();
    expect(verdict.result.checks.find((c) => c.name === 'ak.provenance')?.status).toBe('pass');
    expect(verdict.result.checks.find((c) => c.name === 'nonce.freshness')?.status).toBe('pass');
    expect(verdict.jwt.split('.')).toHaveLength(3);
    // The evidence written is the one answered: it carries the verifier's nonce.
    const ev = JSON.parse(readFileSync(f('ev.json'), 'utf8')) as { nonce: string };
    expect(ev.nonce).toMatch(/^[0-9a-f]{16,128}$/);
    expect(ev.nonce).toBe(verdict.result.nonce);
  });

  it('attest --verifier with no URL takes verifier.endpoint from --config', async () => {
    writeFileSync(f('config.json'), JSON.stringify({ schema: 'hyperenclave/config', version: 1, verifier: { endpoint: verifier!.url } }));
    const r = await run('--config', f('config.json'), 'attest', '--verifier', '--out', f('ev-config.json'), '--pcrs', 'sha256:0-7,12', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(schemaProblems(r.json!)).toBeUndefined();
    expect(r.json!.verifier).toBe(`${verifier!.url}/`);
    expect((r.json!.verdict as Verdict).status).toBe('affirming');
  });

  it('a verifier that never enrolled this AK: exit 4, verdict contraindicated by ak.provenance', async () => {
    const r = await run('attest', '--verifier', stranger!.url, '--out', f('ev-stranger.json'), '--pcrs', 'sha256:0-7,12', '--json');
    expect(r.code, r.stderr).toBe(4);
    const doc = stdoutJson(r);
    expect(schemaProblems(doc)).toBeUndefined();
    const verdict = doc.verdict as Verdict;
    expect(verdict.status).toBe('contraindicated');
    expect(resultProblems(verdict.result)).toBeUndefined();
    expect(verdict.result.checks.find((c) => c.name === 'ak.provenance')?.status).toBe('fail');
    // The rest of the evidence was fine: only the AK's provenance is missing.
    expect(verdict.result.checks.filter((c) => c.status === 'fail').map((c) => c.name)).toEqual(['ak.provenance']);
  });

  it('--nonce with --verifier is a usage error (exit 2); nothing is asked of the verifier', async () => {
    const r = await run('attest', '--nonce', 'ab'.repeat(16), '--verifier', verifier!.url, '--out', f('ev-both.json'));
    expect(r.code, r.stderr).toBe(2);
    expect(errorLineProblem(r)).toBeUndefined();
    expect(r.stderr).toMatch(/give --nonce HEX .*, or --verifier/);
    expect(existsSync(f('ev-both.json'))).toBe(false);
  });

  it('an unreachable verifier: exit 3, one line naming the URL (attest and ak enroll)', async () => {
    const nowhere = await unusedLoopbackUrl();
    for (const args of [
      ['attest', '--verifier', nowhere, '--out', f('ev-nowhere.json'), '--json'],
      ['ak', 'enroll', '--verifier', nowhere, '--json'],
    ]) {
      const r = await run(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(3);
      expect(errorLineProblem(r)).toBeUndefined();
      expect(r.stderr).toContain(nowhere);
      expect(r.stderr).toMatch(/ECONNREFUSED/);
      expect(r.stdout).toBe('');
    }
    expect(existsSync(f('ev-nowhere.json'))).toBe(false);
  });
});
