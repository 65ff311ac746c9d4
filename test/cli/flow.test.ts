import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { foreignImageArch, hostImageArch, vendorNote } from '../helpers/arch.js';
import { pathMissing, skipUnless } from '../helpers/require.js';

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const payload = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'crypto.bin');
const missing = skipUnless('CLI flow tests', [
  ['cli', cliMissing()],
  ['swtpm', swtpmAvailable({ ek: true })],
  ['addon', pathMissing(addon, 'make build')],
  ['enclave-payloads', pathMissing(payload, 'make build')],
  ['kvm', pathMissing('/dev/kvm', 'enclaves cannot run')],
]);

describe.skipIf(!!missing)('operator flow on the emulated platform (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-flow-'));
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  const foreign = foreignImageArch();
  it.skipIf(!!skipUnless('boot refusing the other vendor\'s image', [['known-cpu-vendor', !foreign && `CPU vendor "${vendorNote()}" unknown: boot checks no arch`]]))(`boot refuses an image built for the other CPU vendor and extends nothing (running as ${vendorNote()})`, async () => {
    const img = join(state, 'foreign.img');
    const b = await run('firmware', 'build', addon, '-o', img, '--arch', foreign!, '--raw', '--entry', '0');
    expect(b.code, b.stderr).toBe(0);
    const refused = await run('boot', '--image', img, '--json');
    expect(refused.code).toBe(6);
    expect(refused.stderr).toContain(`image: built for ${foreign} (arch at offset 0xc), this platform is ${hostImageArch()}`);
    const pcrs = (await run('pcr', 'read', '--bank', 'sha256', '--pcrs', '12', '--json')).json!.banks as Record<string, Record<string, string>>;
    expect(pcrs.sha256!['12']).toBe('0'.repeat(64));
  });

  it('boot measures, loads and enables; a second boot in the same boot extends nothing', async () => {
    const img = join(state, 'hv.img');
    const b = await run('firmware', 'build', addon, '-o', img, '--arch', hostImageArch(), '--raw', '--entry', '0');
    expect(b.code, b.stderr).toBe(0);
    const first = await run('boot', '--image', img, '--json');
    expect(first.code, first.stderr).toBe(0);
    expect(first.json!.alreadyEnabled).toBe(false);
    const pcr1 = (await run('pcr', 'read', '--bank', 'sha256', '--pcrs', '12', '--json')).json!.banks as Record<string, Record<string, string>>;
    expect(pcr1.sha256!['12']).not.toBe('0'.repeat(64));
    const second = await run('boot', '--image', img, '--json');
    expect(second.code, second.stderr).toBe(0);
    expect(second.json!.alreadyEnabled).toBe(true);
    const pcr2 = (await run('pcr', 'read', '--bank', 'sha256', '--pcrs', '12', '--json')).json!.banks as Record<string, Record<string, string>>;
    expect(pcr2.sha256!['12']).toBe(pcr1.sha256!['12']);
    const replay = await run('eventlog', 'replay', '--compare', '--json');
    expect(replay.code, replay.stdout + replay.stderr).toBe(0);
  });

  it('status reports the enabled hypervisor (emulated: nothing is demoted, and it says so) and validates against its schema', async () => {
    const text = await run('status');
    expect(text.stdout).toContain('state: enabled in the emulated service (no hypervisor runs under Linux: nothing is demoted)');
    expect(text.stdout).not.toContain('host demoted');
    const s = await run('status', '--json');
    expect(s.code, s.stderr).toBe(0);
    expect(schemaProblems(s.json!)).toBeUndefined();
    expect(s.json!.enabled).toBe(true);
    expect(s.json!.platform).toBe('emulated');
    // what the last `hyperenclave boot` did, in this boot
    expect(s.json!.lastBoot).toMatchObject({ phase: 'enabled', thisBoot: true });
  });

  it('enclave run answers an ECALL under SEV; bad arguments are usage errors', async () => {
    const r = await run('enclave', 'run', join(repoRoot, 'test/fixtures/enclave/crypto.manifest.json'), '--backend', 'sev', '--ecall', '2=abc', '--json');
    expect(r.code, r.stderr).toBe(0);
    const ecalls = r.json!.ecalls as { ok: boolean; output: string }[];
    expect(ecalls[0]).toMatchObject({ ok: true, output: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad' });
    expect(r.json!.keySlot).not.toBeNull();
    expect((await run('enclave', 'run', 'x.json', '--backend', 'tdx')).code).toBe(2);
    expect((await run('enclave', 'destroy', 'abc')).code).toBe(2);
  });

  it('enclave create / list / destroy keep an enclave alive between commands and return its EPC; disable waits for it', async () => {
    const c = await run('enclave', 'create', join(repoRoot, 'test/fixtures/enclave/crypto.manifest.json'), '--backend', 'mktme', '--json');
    expect(c.code, c.stderr).toBe(0);
    expect(schemaProblems(c.json!)).toBeUndefined();
    const id = c.json!.id as number;
    const l = await run('enclave', 'list', '--json');
    expect(schemaProblems(l.json!)).toBeUndefined();
    expect((l.json!.enclaves as { id: number }[]).map((e) => e.id)).toContain(id);
    const busy = await run('disable');
    expect(busy.code).not.toBe(0);
    expect(busy.stderr).toMatch(/ENCLAVES_ALIVE/);
    const d = await run('enclave', 'destroy', String(id), '--json');
    expect(d.code, d.stderr).toBe(0);
    expect(schemaProblems(d.json!)).toBeUndefined();
    expect(d.json!.epcReturned).toBeGreaterThan(0);
    expect(((await run('enclave', 'list', '--json')).json!.enclaves as unknown[]).length).toBe(0);
  });

  it('firmware sign / inspect / launch-env work on the same container', async () => {
    const key = join(state, 'signer.pem');
    const { generateKeyPairSync } = await import('node:crypto');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(key, generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const img = join(state, 'hv.img');
    expect((await run('firmware', 'sign', img, '--key', key)).code).toBe(0);
    const i = await run('firmware', 'inspect', img, '--json');
    expect(i.code, i.stderr).toBe(0);
    expect(schemaProblems(i.json!)).toBeUndefined();
    expect(JSON.stringify(i.json)).toMatch(/ecdsa-p384-sha384/);
    const le = await run('firmware', 'launch-env', '-o', join(state, 'le.bin'), '--arch', hostImageArch(), '--json');
    expect(le.code, le.stderr).toBe(0);
    expect(schemaProblems(le.json!)).toBeUndefined();
  });

  it('disable hands the CPUs back', async () => {
    const d = await run('disable', '--json');
    expect(d.code, d.stderr).toBe(0);
    expect(d.json!.enabled).toBe(false);
  });
});

describe.skipIf(!!missing)('hyperenclave demo', () => {
  it('runs the whole story and ends affirming', async () => {
    const state = mkdtempSync(join(tmpdir(), 'he-demo-'));
    try {
      const r = await runCli(['--state-dir', state, 'demo', '--json'], { timeoutMs: 180_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.result).toEqual({ status: 'affirming', failed: [] });
      expect((r.json!.enclaves as unknown[]).length).toBe(4);
      expect(r.json!.drtm).toBe(true);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});
