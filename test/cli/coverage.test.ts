import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/program.js';
import { cliMissing, repoRoot, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { hostImageArch } from '../helpers/arch.js';
import { commandMissing, pathMissing, skipUnless } from '../helpers/require.js';

/** Every command group registered, as `--help` and completion see the tree. */
const fullProgram = await buildProgram();

/**
 * Successful runs, --json checked against its schema, for the commands no other process test
 * validates: firmware build/sign, emulator start/status/stop, enable, disable, boot, enclave run,
 * demo; and completion (not a reporting command: its script must parse).
 */

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const payload = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'crypto.bin');
const missing = skipUnless('the command coverage process tests', [['cli', cliMissing()]]);
const noHypervisor = missing ?? skipUnless('the hypervisor coverage tests', [['swtpm', swtpmAvailable({ ek: true })], ['addon', pathMissing(addon, 'make build')]]);
const noEnclave = noHypervisor ?? skipUnless('the enclave and demo coverage tests', [['enclave-payloads', pathMissing(payload, 'make build')], ['kvm', pathMissing('/dev/kvm', 'enclaves cannot run')]]);
const hasZsh = !missing && !skipUnless('parsing the zsh completion script (its content is still checked)', [['zsh', commandMissing('zsh', 'zsh')]]);
const hasFish = !missing && !skipUnless('parsing the fish completion script (its content is still checked)', [['fish', commandMissing('fish', 'fish')]]);

function leafCommands(cmd: Command, prefix: string[] = []): string[][] {
  return cmd.commands.length ? cmd.commands.flatMap((c) => leafCommands(c, [...prefix, c.name()])) : [prefix];
}

describe.skipIf(!!missing)('completion bash|zsh|fish (built CLI as a process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'he-completion-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('each script names every command and parses in its shell', async () => {
    const leaves = leafCommands(fullProgram);
    for (const shell of ['bash', 'zsh', 'fish'] as const) {
      const r = await runCli(['completion', shell]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      for (const path of leaves) for (const word of path) expect(r.stdout, `${shell}: ${path.join(' ')}`).toContain(word);
      const file = join(dir, `hyperenclave.${shell}`);
      writeFileSync(file, r.stdout);
      if (shell === 'bash' || (shell === 'zsh' && hasZsh) || (shell === 'fish' && hasFish)) {
        const syntax = spawnSync(shell, ['-n', file], { encoding: 'utf8' });
        expect(syntax.status, `${shell} -n: ${syntax.stderr}`).toBe(0);
      }
    }
    // bash, sourced: the completion is registered and offers the subcommands of "enclave".
    const probe = spawnSync(
      'bash',
      ['-c', `source "$1"; complete -p hyperenclave >/dev/null || exit 9; COMP_WORDS=(hyperenclave enclave ''); COMP_CWORD=2; _hyperenclave; printf '%s\\n' "\${COMPREPLY[@]}"`, 'probe', join(dir, 'hyperenclave.bash')],
      { encoding: 'utf8' },
    );
    expect(probe.status, probe.stderr).toBe(0);
    expect(probe.stdout.split('\n').filter((w) => w && !w.startsWith('-')).sort()).toEqual(['create', 'destroy', 'list', 'run']);
  });
});

describe.skipIf(!!noHypervisor)('firmware, emulator, enable / disable / boot, enclave run: --json valid against the schemas', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-coverage-'));
  const f = (n: string) => join(state, n);
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000, env: { HYPERENCLAVE_CONFIG: f('no-config.json') } });
  const json = async (...a: string[]) => {
    const r = await run(...a, '--json');
    expect(r.code, `${a.join(' ')}: ${r.stderr}`).toBe(0);
    expect(schemaProblems(r.json!), a.join(' ')).toBeUndefined();
    return r.json!;
  };
  beforeAll(() => {
    writeFileSync(f('signer.pem'), generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  });
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it('firmware build and firmware sign', async () => {
    const built = await json('firmware', 'build', addon, '-o', f('hv.img'), '--arch', hostImageArch(), '--raw', '--entry', '0');
    expect(built).toMatchObject({ schema: 'hyperenclave/image-info', path: f('hv.img'), signer: null, header: { kind: 'raw' } });
    const signed = await json('firmware', 'sign', f('hv.img'), '--key', f('signer.pem'), '-o', f('hv-signed.img'));
    expect(signed).toMatchObject({ path: f('hv-signed.img'), digests: built.digests, signer: { alg: 'ecdsa-p384-sha384' } });
    expect(signed.id).not.toBe(built.id); // the id covers the header, which now names the signer
  });

  it('emulator start / status', async () => {
    const started = await json('emulator', 'start');
    expect(started.running).toBe(true);
    const status = await json('emulator', 'status');
    expect(status).toMatchObject({ running: true, pid: started.pid });
  });

  it('enable --image loads and demotes; disable hands the CPUs back; boot in the same boot keeps the loaded image', async () => {
    const enabled = await json('enable', '--image', f('hv-signed.img'));
    expect(enabled).toMatchObject({ schema: 'hyperenclave/hypervisor-status', platform: 'emulated', loaded: true, enabled: true });
    const disabled = await json('disable');
    expect(disabled).toMatchObject({ loaded: true, enabled: false });
    // Same boot, same image still loaded: boot measures and enables without loading it again.
    const booted = await json('boot', '--image', f('hv-signed.img'));
    expect(booted.alreadyEnabled).toBe(false);
    const state0 = booted.state as { phase: string; steps: { name: string; status: string }[]; image: { id: string } };
    expect(state0.phase).toBe('enabled');
    expect(state0.steps.map((s) => `${s.name}:${s.status}`)).toEqual(['platform:done', 'verify-image:done', 'measure:done', 'load:done', 'enable:done', 'trust:done']);
    expect((await json('status')).enabled).toBe(true);
  });

  it.skipIf(!!noEnclave)('enclave run --json under CSV', async () => {
    const r = await json('enclave', 'run', join(repoRoot, 'test/fixtures/enclave/crypto.manifest.json'), '--backend', 'csv', '--ecall', '2=abc');
    expect(r).toMatchObject({ backend: 'csv' });
    expect(r).not.toHaveProperty('report'); // the host gets no enclave REPORT (ENCLAVE_ONLY)
    expect((r.ecalls as { ok: boolean; output: string }[])[0]).toMatchObject({ ok: true, output: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad' });
  });

  it('disable, then emulator stop / status', async () => {
    expect((await json('disable')).enabled).toBe(false);
    const stopped = await json('emulator', 'stop');
    expect(stopped).toMatchObject({ running: false, stopped: true });
    expect((await json('emulator', 'status')).running).toBe(false);
    expect((await json('emulator', 'stop')).stopped).toBe(false);
  });
});

describe.skipIf(!!noEnclave)('demo --json', () => {
  it('one backend: valid against its schema and affirming', async () => {
    const state = mkdtempSync(join(tmpdir(), 'he-coverage-demo-'));
    try {
      const r = await runCli(['--state-dir', state, 'demo', '--backend', 'none', '--json'], { timeoutMs: 180_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(schemaProblems(r.json!)).toBeUndefined();
      expect(r.json!.result).toEqual({ status: 'affirming', failed: [] });
      expect((r.json!.enclaves as { backend: string }[]).map((e) => e.backend)).toEqual(['none']);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});
