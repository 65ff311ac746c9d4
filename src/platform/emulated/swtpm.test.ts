import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates, type SwtpmInstance } from './swtpm.js';
import { commandMissing, skipUnless } from '../../../test/helpers/require.js';

const missing = skipUnless('swtpm launcher tests', [['swtpm', swtpmAvailable({ ek: true })]]);
const hasTools = !missing && !skipUnless('swtpm launcher: tpm2-tools checks', [['tpm2-tools', commandMissing('tpm2_getcap', 'tpm2-tools')]]);

describe.skipIf(!!missing)('swtpm launcher', () => {
  const started: SwtpmInstance[] = [];
  afterAll(async () => {
    for (const t of started) await t.stop();
  });

  it('starts two private TPMs on distinct TCP ports and a Unix-socket one', async () => {
    const a = await startSwtpm();
    const b = await startSwtpm();
    const c = await startSwtpm({ transport: 'unix' });
    started.push(a, b, c);
    expect(a.port).not.toBe(b.port);
    expect(a.stateDir).not.toBe(b.stateDir);
    expect(c.tcti).toMatch(/^swtpm:path=/);
    expect(existsSync(c.serverPath!)).toBe(true);
  });

  it.skipIf(!hasTools)('answers tpm2-tools with the requested banks', async () => {
    const t = await startSwtpm({ banks: ['sha1', 'sha256'] });
    started.push(t);
    const r = spawnSync('tpm2_getcap', ['-T', `swtpm:port=${t.port}`, 'pcrs'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/sha1: \[ 0, 1/);
    expect(r.stdout).toMatch(/sha256: \[ 0, 1/);
    expect(r.stdout).toMatch(/sha384: \[ \]/);
  });

  it.skipIf(!hasTools)('tpm2-tools reaches a Unix-socket instance through its own swtpm:path= TCTI', async () => {
    const t = await startSwtpm({ transport: 'unix' });
    started.push(t);
    const r = spawnSync('tpm2_getcap', ['-T', t.tcti, 'properties-fixed'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('TPM2_PT_MANUFACTURER');
  });

  it('creates EK certificates signed by a CA private to the instance', async () => {
    const t = await startSwtpm({ ek: true });
    started.push(t);
    expect(swtpmCaCertificates(t).length).toBeGreaterThan(0);
  });

  it('stop() ends the process and removes its state', async () => {
    const t = await startSwtpm();
    await t.stop();
    expect(existsSync(t.stateDir)).toBe(false);
    expect(() => process.kill(t.pid, 0)).toThrow();
  });
});
