import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './cli.js';
import { COMPONENTS, isCi, MissingInCi, skipUnless } from './require.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';

describe('skip decisions (test/helpers/require.ts)', () => {
  it('outside CI a missing component is a skip with its reason; under CI it is an error naming it', () => {
    expect(skipUnless('t', [['swtpm', false], ['kvm', undefined]], {})).toBeUndefined();
    expect(skipUnless('t', [['swtpm', 'swtpm is not installed']], {})).toBe('swtpm is not installed');
    expect(() => skipUnless('TPM tests', [['swtpm', 'swtpm is not installed']], { CI: 'true' })).toThrow(MissingInCi);
    expect(() => skipUnless('TPM tests', [['swtpm', 'swtpm is not installed']], { CI: 'true' })).toThrow(/^CI=true: "TPM tests" needs swtpm \/ swtpm-tools, missing: swtpm is not installed/);
    for (const c of ['tpm2-tools', 'kvm', 'qemu', 'addon', 'cli', 'enclave-payloads'] as const) expect(() => skipUnless('x', [[c, 'gone']], { CI: '1' })).toThrow(MissingInCi);
  });

  it('what a machine may genuinely lack stays a skip under CI', () => {
    for (const c of ['tpm-device', 'msr-device', 'cpuid-device', 'hyperenclave-driver'] as const) {
      expect(COMPONENTS[c].ci).toBe('may-lack');
      expect(skipUnless('x', [[c, 'absent here']], { CI: 'true' })).toBe('absent here');
    }
  });

  it('CI is CI=true or CI=1, as CI services and .ci/run set it', () => {
    expect([isCi({ CI: 'true' }), isCi({ CI: '1' }), isCi({}), isCi({ CI: 'false' }), isCi({ CI: '' })]).toEqual([true, true, false, false, false]);
  });
});

// A real test file run by vitest in a child process whose PATH has no swtpm: under CI=true the
// run fails and names swtpm; without CI the same run passes with the file's tests skipped.
describe('a CI run with swtpm uninstalled fails rather than skips', () => {
  const bin = mkdtempSync(join(tmpdir(), 'he-nopath-'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  symlinkSync(process.execPath, join(bin, 'node'));
  const vitest = join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs');
  const run = (ci: boolean) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: bin, NO_COLOR: '1' };
    delete env.CI;
    delete env.VITEST;
    delete env.VITEST_WORKER_ID;
    delete env.VITEST_POOL_ID;
    if (ci) env.CI = 'true';
    return spawnSync(process.execPath, [vitest, 'run', '--root', repoRoot, 'src/tpm/drtm.test.ts'], { cwd: repoRoot, env, encoding: 'utf8', timeout: 120_000 });
  };

  it('the child PATH really lacks swtpm', () => {
    const saved = process.env.PATH;
    process.env.PATH = bin;
    try {
      expect(swtpmAvailable()).toMatch(/swtpm is not installed/);
    } finally {
      process.env.PATH = saved;
    }
  });

  it('CI=true: the file fails and the output names swtpm', () => {
    const r = run(true);
    const out = r.stdout + r.stderr;
    expect(r.status, out).not.toBe(0);
    expect(out).toMatch(/CI=true: "DRTM tests" needs swtpm \/ swtpm-tools, missing: swtpm is not installed/);
  });

  it('without CI: the same run passes, its tests reported as skipped', () => {
    const r = run(false);
    const out = r.stdout + r.stderr;
    rmSync(bin, { recursive: true, force: true });
    expect(r.status, out).toBe(0);
    expect(out).toMatch(/SKIP DRTM tests: swtpm: swtpm is not installed/);
    expect(out).toMatch(/Tests\s+\d+ skipped/);
  });
});
