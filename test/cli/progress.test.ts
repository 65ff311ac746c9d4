import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { lastScreenLine, runCliOnTty, scriptMissing } from './tty.js';
import { hostImageArch } from '../helpers/arch.js';
import { pathMissing, skipUnless } from '../helpers/require.js';

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const payload = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'crypto.bin');
const missing = skipUnless('CLI progress tests', [['cli', cliMissing()]]);
const noTpm = missing ?? skipUnless('measure progress tests', [['swtpm', swtpmAvailable({ ek: true })]]);
const noPty = missing ?? skipUnless('pseudo-terminal progress tests', [['script', scriptMissing()]]);
const noEnclave =
  noTpm ?? noPty ?? skipUnless('the enclave progress test', [['addon', pathMissing(addon, 'make build')], ['enclave-payloads', pathMissing(payload, 'make build')], ['kvm', pathMissing('/dev/kvm', 'enclaves cannot run')]]);

/** Progress is a carriage-return redraw with a percentage: none of it may reach a pipe. */
const PROGRESS = /\r|\d+%|MiB\/s/;

describe.skipIf(!!missing)('progress of long operations (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-progress-'));
  const img = join(state, 'big.img');
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });
  const tty = (args: string[], stdoutFile?: string) => runCliOnTty(['--platform', 'emulated', '--state-dir', state, ...args], stdoutFile ? { stdoutFile } : {});

  beforeAll(async () => {
    // 24 MiB: six 4 MiB chunks, hashed on the parallel path (16 MiB and more, two banks).
    writeFileSync(join(state, 'big.bin'), randomBytes(24 * 1024 * 1024));
    const b = await run('firmware', 'build', join(state, 'big.bin'), '-o', img, '--arch', hostImageArch(), '--raw', '--entry', '0');
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toBe('');
  });
  afterAll(async () => {
    if (!noTpm) await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  it('firmware reference over a large image writes no progress to a pipe', async () => {
    const r = await run('firmware', 'reference', img, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(schemaProblems(r.json!)).toBeUndefined();
    expect(r.stderr).toBe('');
  });

  it.skipIf(!!noTpm)('measure of a multi-MiB image writes no progress when stderr is not a terminal', async () => {
    const m = await run('measure', img);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toMatch(/^measured .*big\.img/);
    expect(m.stderr).not.toMatch(PROGRESS);
    expect(m.stderr).toBe('');
  });

  it.skipIf(!!noTpm || !!noPty)('measure on a terminal shows bytes, percent and throughput, then clears the line', async () => {
    const out = join(state, 'measure.out');
    const r = await tty(['measure', img], out);
    expect(r.code, r.terminal).toBe(0);
    expect(r.terminal).toMatch(/\rmeasure \S*big\.img \[[#.]{20}\] +\d+%  [\d.]+ MiB\/24\.0 MiB  [\d.]+ MiB\/s/);
    expect(lastScreenLine(r.terminal)).toBe('');
    expect(readFileSync(out, 'utf8')).toMatch(/^measured .*big\.img/);
    // --json and --quiet keep even a terminal free of progress.
    for (const flag of ['--json', '--quiet']) {
      const q = await tty(['measure', img, flag], join(state, 'measure-q.out'));
      expect(q.code, q.terminal).toBe(0);
      expect(q.terminal, flag).not.toMatch(PROGRESS);
    }
  });

  it.skipIf(!!noPty)('firmware reference on a terminal shows progress; stdout stays clean', async () => {
    const out = join(state, 'reference.out');
    const r = await tty(['firmware', 'reference', img], out);
    expect(r.code, r.terminal).toBe(0);
    expect(r.terminal).toMatch(/\rhash \S*big\.img \[[#.]{20}\] +\d+%/);
    expect(lastScreenLine(r.terminal)).toBe('');
    expect(readFileSync(out, 'utf8')).not.toMatch(PROGRESS);
  });

  it.skipIf(!!noEnclave)('enclave run on a terminal shows the pages being added', async () => {
    const hv = join(state, 'hv.img');
    const b = await run('firmware', 'build', addon, '-o', hv, '--arch', hostImageArch(), '--raw', '--entry', '0');
    expect(b.code, b.stderr).toBe(0);
    const boot = await run('boot', '--image', hv);
    expect(boot.code, boot.stderr).toBe(0);
    const out = join(state, 'enclave.out');
    const r = await tty(['enclave', 'run', join(repoRoot, 'test/fixtures/enclave/crypto.manifest.json'), '--backend', 'none'], out);
    expect(r.code, r.terminal).toBe(0);
    expect(r.terminal).toMatch(/\radd pages \S*crypto\.manifest\.json \[[#.]{20}\] 100%  [\d.]+ KiB\/[\d.]+ KiB/);
    expect(lastScreenLine(r.terminal)).toBe('');
    expect(readFileSync(out, 'utf8')).toMatch(/^enclave crypto: MRENCLAVE/);
    const piped = await run('enclave', 'run', join(repoRoot, 'test/fixtures/enclave/crypto.manifest.json'), '--backend', 'none');
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stderr).not.toMatch(PROGRESS);
  });
});
