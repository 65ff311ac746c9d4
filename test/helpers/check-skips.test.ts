import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './cli.js';

/** check-skips.mjs on a synthetic vitest JSON report: a skip not in test/skips-allowed.txt fails CI. */
function run(skippedTitle: string, ci: string) {
  const dir = mkdtempSync(join(tmpdir(), 'he-skips-'));
  try {
    const report = { testResults: [{ name: join(repoRoot, 'src/x.test.ts'), assertionResults: [{ status: 'passed', fullName: 'runs' }, { status: 'skipped', fullName: skippedTitle }] }] };
    writeFileSync(join(dir, 'r.json'), JSON.stringify(report));
    return spawnSync(process.execPath, [join(repoRoot, 'test/helpers/check-skips.mjs'), join(dir, 'r.json')], { encoding: 'utf8', env: { ...process.env, CI: ci } });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('CI skip guard (test/helpers/check-skips.mjs)', () => {
  it('under CI a skip the allow-list does not name fails the run, naming the test', () => {
    const r = run('needs swtpm', 'true');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/NOT ALLOWED {2}src\/x\.test\.ts > needs swtpm/);
  });
  it('outside CI the same skip is listed, not fatal; an allowed skip passes under CI', () => {
    expect(run('needs swtpm', '').status).toBe(0);
    expect(run('real event logs go-attestation-option_rom_eventlog.bin agrees with tpm2_eventlog', 'true').status).toBe(0);
    // an allow-list entry naming a file matches only that file
    expect(run('Linux TPM character device reads random bytes', 'true').status).toBe(1);
  });
});
