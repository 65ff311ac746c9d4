import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli, schemaProblems, writeEmulatedVerifierPolicy } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { rawImageArgs, runSteps } from '../helpers/boot.js';

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const payload = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'sealer.bin');
const manifest = join(repoRoot, 'test', 'fixtures', 'enclave', 'sealer.manifest.json');
const missing =
  cliMissing() ??
  swtpmAvailable({ ek: true }) ??
  (existsSync(addon) ? undefined : `${addon} not built (make build)`) ??
  (existsSync(payload) ? undefined : `${payload} not built (make build)`) ??
  (existsSync('/dev/kvm') ? undefined : '/dev/kvm absent: enclaves cannot run');
if (missing) console.warn(`skipping CLI enclave attestation tests: ${missing}`);

/**
 * Issue 12 on the emulated platform, as an operator and a verifier would run it, through files:
 * boot (the hypervisor seals its root in swtpm and binds its HAK in PCR 13) → AK enrollment →
 * `attest --enclave sealer.manifest.json` → `verify` affirms; the same evidence under policies
 * that name another enclave, refuse DEBUG, or with the evidence altered, is refused by name.
 */
describe.skipIf(!!missing)('attest --enclave + verify on the emulated platform (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-encl-att-'));
  const f = (n: string) => join(state, n);
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 180_000 });
  const nonce = randomBytes(32).toString('hex');
  let attested: { name: string; mrenclave: string; mrsigner: string; debug: boolean }[] = [];

  beforeAll(async () => {
    const img = f('hv.img');
    await runSteps(run, [rawImageArgs(addon, img), ['firmware', 'reference', img, '-o', f('reference-values.json')], ['boot', '--image', img], ['ak', 'create']]);
    writeEmulatedVerifierPolicy(state, f('.'));
    await runSteps(run, [
      ['ak', 'enroll', '--request', f('req.json')],
      ['verifier', 'enroll', '--policy', f('policy.json'), '--request', f('req.json'), '--challenge', f('ch.json')],
      ['ak', 'enroll', '--challenge', f('ch.json'), '--answer', f('ans.json')],
      ['verifier', 'enroll', '--policy', f('policy.json'), '--answer', f('ans.json')],
    ]);
  }, 300_000);
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  /** The standard policy plus the enclave identities given. */
  function policy(name: string, enclaves: Record<string, unknown>): string {
    const p = JSON.parse(readFileSync(f('policy.json'), 'utf8'));
    writeFileSync(f(name), JSON.stringify({ ...p, requiredPcrs: { sha256: [0, 1, 2, 3, 4, 5, 6, 7, 12, 13] }, checks: { ...p.checks, 'enclave.*': 'required' }, enclaves }));
    return f(name);
  }

  it('attest --enclave quotes the sealer through the hypervisor; verify affirms every enclave check', async () => {
    const a = await run('attest', '--nonce', nonce, '--enclave', manifest, '--user-data', 'c0ffee', '--out', f('ev.json'), '--json');
    expect(a.code, a.stderr).toBe(0);
    expect(schemaProblems(a.json!)).toBeUndefined();
    attested = a.json!.enclaves as typeof attested;
    expect(attested.map((e) => e.name)).toEqual(['sealer']);
    const ev = JSON.parse(readFileSync(f('ev.json'), 'utf8'));
    expect(Buffer.from(ev.enclaves[0].quote, 'base64').subarray(0, 4).toString('latin1')).toBe('HEQ1');
    expect(ev.enclaves[0].userData).toBe('c0ffee');
    expect(ev.claims.platformKind).toBeUndefined();
    expect(ev.akProvenance.ekCertificates[0]).toMatch(/^-----BEGIN CERTIFICATE-----/);

    const pol = policy('policy-encl.json', { allowed: [{ name: 'sealer', mrenclave: attested[0]!.mrenclave, mrsigner: attested[0]!.mrsigner, isvProdId: 7, minIsvSvn: 1 }], minCount: 1 });
    const v = await run('verify', f('ev.json'), '--policy', pol, '--nonce', nonce, '--state-of-verifier', join(state, 'verifier'), '--json');
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(schemaProblems(v.json!)).toBeUndefined();
    expect(v.json!['ear.status'], v.stdout).toBe('affirming');
    expect(v.json!.platformKind).toBe('emulated');
    const checks = v.json!.checks as { name: string; status: string }[];
    for (const n of ['enclave.quote-format', 'enclave.quote-signature', 'enclave.hak-bound', 'enclave.reportdata-nonce', 'enclave.mrenclave', 'enclave.mrsigner', 'enclave.isvprodid', 'enclave.isvsvn', 'enclave.attributes', 'reference.hypervisor', 'eventlog.runtime', 'ak.provenance', 'platform.kind'])
      expect(checks.find((c) => c.name === n)?.status, `${n}: ${v.stdout}`).toBe('pass');
  });

  it('the same evidence is refused by name: another enclave allowed, the quote altered, userData swapped, replayed', async () => {
    const names = async (args: string[]) => {
      const r = await run('verify', ...args, '--json');
      expect(r.code, r.stderr).toBe(4);
      return JSON.parse(r.stdout) as { 'ear.status': string; checks: { name: string; status: string }[] };
    };
    const failed = (doc: { checks: { name: string; status: string }[] }) => doc.checks.filter((c) => c.status === 'fail').map((c) => c.name);

    // (the verifier state accepted ev.json above, so `clock` fails too: each case names its own check)
    const other = policy('policy-other.json', { allowed: [{ mrenclave: 'ab'.repeat(32) }] });
    expect(failed(await names([f('ev.json'), '--policy', other, '--nonce', nonce]))).toContain('enclave.mrenclave');

    const ev = JSON.parse(readFileSync(f('ev.json'), 'utf8'));
    const q = Buffer.from(ev.enclaves[0].quote, 'base64');
    q[16 + 64]! ^= 1; // MRENCLAVE bit
    writeFileSync(f('ev-q.json'), JSON.stringify({ ...ev, enclaves: [{ ...ev.enclaves[0], quote: q.toString('base64') }] }));
    const pol = f('policy-encl.json');
    expect(failed(await names([f('ev-q.json'), '--policy', pol, '--nonce', nonce]))).toContain('enclave.quote-signature');

    writeFileSync(f('ev-u.json'), JSON.stringify({ ...ev, enclaves: [{ ...ev.enclaves[0], userData: 'c0ffef' }] }));
    expect(failed(await names([f('ev-u.json'), '--policy', pol, '--nonce', nonce]))).toEqual(expect.arrayContaining(['nonce', 'enclave.reportdata-nonce']));

    // the verifier that accepted ev.json sees it again: same TPM clock
    expect(failed(await names([f('ev.json'), '--policy', pol, '--nonce', nonce, '--state-of-verifier', join(state, 'verifier')]))).toContain('clock');
  });

  it('--enclave with a missing manifest or bad --user-data is refused before anything runs', async () => {
    expect((await run('attest', '--nonce', nonce, '--enclave', f('absent.json'))).code).toBe(3);
    expect((await run('attest', '--nonce', nonce, '--enclave', manifest, '--user-data', 'xyz')).code).toBe(2);
    expect((await run('attest', '--nonce', '0011', '--enclave', manifest)).code).toBe(2);
  });
});
