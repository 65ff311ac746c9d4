import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot } from '../helpers/cli.js';
import { commandMissing, skipUnless } from '../helpers/require.js';

const missing = skipUnless('install tests', [['cli', cliMissing()], ['make', commandMissing('make', 'make')]]);

describe.skipIf(!!missing)('make install into a temporary root', () => {
  const root = mkdtempSync(join(tmpdir(), 'he-destdir-'));
  beforeAll(() => {
    // What `make install` builds first is already built (make test builds before testing):
    // rebuilding here would rewrite dist/ and node_modules under the test files running beside
    // this one (a CLI process then loads a half-written module), so those targets count as made.
    const made = ['build', 'build-ts', 'build-rust', 'deps'].flatMap((t) => ['-o', t]);
    const r = spawnSync('make', ['-s', ...made, 'install', `DESTDIR=${root}`], { cwd: repoRoot, encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stderr + r.stdout).toBe(0);
  }, 300_000);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('installs the CLI, unit, config, completions and docs', () => {
    for (const f of [
      'usr/bin/hyperenclave',
      'lib/systemd/system/hyperenclave.service',
      'etc/hyperenclave/config.json',
      'usr/lib/modules-load.d/hyperenclave.conf',
      'etc/modprobe.d/hyperenclave.conf',
      'usr/share/bash-completion/completions/hyperenclave',
      'usr/share/zsh/vendor-completions/_hyperenclave',
      'usr/share/fish/vendor_completions.d/hyperenclave.fish',
      'usr/share/doc/hyperenclave/README.md',
      'usr/lib/hyperenclave/schemas/config.schema.json',
    ])
      expect(existsSync(join(root, f)), f).toBe(true);
  });

  it('the installed CLI runs from the temporary root', () => {
    const map = join(root, 'map.txt');
    writeFileSync(map, '0x100000 0x3fffffff System RAM\n');
    const r = spawnSync(join(root, 'usr/bin/hyperenclave'), ['firmware', 'memmap', '--map', map, '--keep-mib', '64', '--json'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).schema).toBe('hyperenclave/memmap-plan');
  });

  it('the installed default config is valid', async () => {
    const { loadConfig } = await import('../../src/config/index.js');
    expect(loadConfig(join(root, 'etc/hyperenclave/config.json')).schema).toBe('hyperenclave/config');
  });

  it.skipIf(!!missing || !!skipUnless('unit verification and sandbox rating', [['systemd-analyze', commandMissing('systemd-analyze', 'systemd')]]))('the unit verifies and its sandbox exposure stays low', () => {
    const v = spawnSync('systemd-analyze', ['verify', `--root=${root}`, '/lib/systemd/system/hyperenclave.service'], { encoding: 'utf8' });
    expect(v.status, v.stderr).toBe(0);
    const s = spawnSync('systemd-analyze', ['security', '--offline=yes', `--root=${root}`, 'hyperenclave.service'], { encoding: 'utf8' });
    const m = /Overall exposure level for hyperenclave\.service: ([\d.]+)/.exec(s.stdout + s.stderr);
    expect(m, s.stdout + s.stderr).not.toBeNull();
    const exposure = Number(m![1]);
    console.info(`systemd-analyze security exposure of hyperenclave.service: ${exposure}`);
    // Root with CAP_SYS_RAWIO (what the driver checks), device access to the TPM and
    // /dev/hyperenclave, W+X for Node's JIT: issue 18 allows at most 2.5 for the working unit
    // (the system tier's systemd mode measures the booted unit the same way).
    expect(exposure).toBeLessThanOrEqual(2.5);
    // The driver checks CAP_SYS_RAWIO on every ioctl: the unit keeps exactly that one.
    const unit = readFileSync(join(root, 'lib/systemd/system/hyperenclave.service'), 'utf8');
    expect(/^CapabilityBoundingSet=(.*)$/m.exec(unit)?.[1]).toBe('CAP_SYS_RAWIO');
    const driver = readFileSync(join(repoRoot, 'hypervisor/driver/main.c'), 'utf8');
    expect([...driver.matchAll(/capable\((CAP_[A-Z_]+)\)/g)].map((m) => m[1])).toEqual(['CAP_SYS_RAWIO']);
  });
});
