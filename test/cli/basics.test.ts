import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { cliMissing, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { skipUnless } from '../helpers/require.js';

const missing = skipUnless('CLI end-to-end tests', [['cli', cliMissing()]]);

describe.skipIf(!!missing)('hyperenclave CLI basics (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-cli-'));
  afterAll(async () => {
    await runCli(['--platform', 'emulated', '--state-dir', state, 'emulator', 'stop']);
    rmSync(state, { recursive: true, force: true });
  });

  it('usage errors exit 2 with one line, no stack trace', async () => {
    for (const args of [['no-such-command'], ['--platform', 'mars', 'emulator', 'status'], ['firmware', 'memmap', '--epc-mib', 'x']]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('--help works on every command and shows an example where given', async () => {
    const r = await runCli(['firmware', 'memmap', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Example:');
  });

  it('a reader that closes the pipe early (| head -1) ends the CLI quietly with exit 0', () => {
    // ~290 KB of JSON: more than a pipe holds, so the CLI is still writing when head exits
    const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
    const log = join(process.cwd(), 'test', 'fixtures', 'eventlog', 'go-attestation-option_rom_eventlog.bin');
    const r = spawnSync('bash', ['-c', `set -o pipefail; node ${cli} eventlog show ${log} --json | head -1`], { encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('{');
    expect(r.stderr).not.toMatch(/EPIPE|Unhandled/);
    expect(r.status).toBe(0);
  });

  it('firmware memmap plans from a given map, --json valid against its schema', async () => {
    const map = join(state, 'map.txt');
    writeFileSync(map, '0x0 0x9fbff System RAM\n0x100000 0xbfffffff System RAM\n0x100000000 0x43fffffff System RAM\n');
    const r = await runCli(['firmware', 'memmap', '--map', map, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(schemaProblems(r.json!)).toBeUndefined();
    expect(r.json!.memmapArg).toBe('memmap=256M$0x430000000');
    const bad = join(state, 'bad.txt');
    writeFileSync(bad, '0x0 0x10 System RAM\nnonsense\n');
    const b = await runCli(['firmware', 'memmap', '--map', bad]);
    expect(b.code).toBe(6);
    expect(b.stderr.trim()).toMatch(/bad\.txt:2: expected "START END TYPE"/);
    const gone = await runCli(['firmware', 'memmap', '--map', join(state, 'absent.txt')]);
    expect(gone.code).toBe(3);
  });

  it.skipIf(!!missing || !!skipUnless('emulator start/status/stop', [['swtpm', swtpmAvailable({ ek: true })]]))('emulator start/status/stop keep one TPM per state directory', async () => {
    const a = await runCli(['--platform', 'emulated', '--state-dir', state, 'emulator', 'start', '--json']);
    expect(a.code, a.stderr).toBe(0);
    expect(schemaProblems(a.json!)).toBeUndefined();
    const b = await runCli(['--platform', 'emulated', '--state-dir', state, 'emulator', 'start', '--json']);
    expect(b.json!.pid).toBe(a.json!.pid);
    const s = await runCli(['--platform', 'emulated', '--state-dir', state, 'emulator', 'stop', '--json']);
    expect(s.json!.stopped).toBe(true);
    const st = await runCli(['--platform', 'emulated', '--state-dir', state, 'emulator', 'status', '--json']);
    expect(st.json!.running).toBe(false);
  });

  it('platform reports every feature with a fix for what is missing, on both platforms', async () => {
    for (const kind of ['emulated', 'linux']) {
      const r = await runCli(['--platform', kind, '--state-dir', state, 'platform', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(schemaProblems(r.json!)).toBeUndefined();
      const features = r.json!.features as { name: string; available: boolean; fix?: string }[];
      expect(features.map((f) => f.name)).toEqual(expect.arrayContaining(['virtualization', 'kvm', 'tpm', 'iommu', 'sev', 'csv', 'mktme']));
      for (const f of features) if (!f.available) expect(f.fix, f.name).toBeTruthy();
    }
    const human = await runCli(['--platform', 'emulated', 'platform']);
    expect(human.stdout).toMatch(/platform: emulated \(software models/);
  });
});
