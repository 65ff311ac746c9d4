import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, errorLineProblem, repoRoot, runCli, schemaProblems } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { hostImageArch } from '../helpers/arch.js';
import { skipUnless } from '../helpers/require.js';

const missing = skipUnless('the configuration process tests', [['cli', cliMissing()]]);
const noTpm = missing ?? skipUnless('the valid-configuration measure test', [['swtpm', swtpmAvailable({ ek: true })]]);

/** The commands that read the configuration (attest and ak enroll: --verifier without a URL reads verifier.endpoint). */
const READERS: string[][] = [['measure', 'IMAGE'], ['boot', '--image', 'IMAGE'], ['attest', '--verifier'], ['ak', 'enroll', '--verifier']];

describe.skipIf(!!missing)('--config: a missing, malformed or schema-invalid configuration is refused (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-config-'));
  const f = (n: string) => join(state, n);
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 60_000 });
  const hv = f('hv.img');
  const withImage = (args: string[]) => args.map((a) => (a === 'IMAGE' ? hv : a));

  beforeAll(async () => {
    const b = await run('firmware', 'build', join(repoRoot, 'test/fixtures/measure/tiny.elf'), '-o', hv, '--arch', hostImageArch());
    expect(b.code, b.stderr).toBe(0);
  });
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  /** Runs every reader with --config FILE; each must exit `code` with one line naming the file that matches `says`. */
  async function refusedByAll(file: string, code: number, says: RegExp[]): Promise<string[]> {
    const problems: string[] = [];
    await Promise.all(
      READERS.map(async (cmd) => {
        const args = ['--config', file, ...withImage(cmd)];
        const r = await run(...args);
        const line = `hyperenclave ${args.join(' ')}`;
        if (r.code !== code) problems.push(`${line}: exit ${r.code}, want ${code}: ${r.stderr.trim()}`);
        else if (errorLineProblem(r)) problems.push(`${line}: ${errorLineProblem(r)}`);
        else if (!r.stderr.includes(file)) problems.push(`${line}: the message does not name ${file}: ${r.stderr.trim()}`);
        else for (const s of says) if (!s.test(r.stderr)) problems.push(`${line}: message ${JSON.stringify(r.stderr.trim())} does not match ${s}`);
        if (r.stdout !== '') problems.push(`${line}: printed on stdout: ${r.stdout}`);
      }),
    );
    return problems;
  }

  it('a missing --config file: exit 3 naming it', async () => {
    expect(await refusedByAll(f('absent-config.json'), 3, [/no such file/])).toEqual([]);
  });

  it('invalid JSON: exit 6 naming the file and the position (mid-file and truncated)', async () => {
    writeFileSync(f('syntax.json'), '{"schema": "hyperenclave/config", "version": 1 "platform": "emulated"}');
    expect(await refusedByAll(f('syntax.json'), 6, [/not JSON: .* at position 47$/m])).toEqual([]);
    const truncated = '{"schema": "hyperenclave/config", "version": 1, "verifier": {"endpoint": ';
    writeFileSync(f('truncated.json'), truncated);
    expect(await refusedByAll(f('truncated.json'), 6, [new RegExp(`not JSON: .* at position ${truncated.length}$`, 'm')])).toEqual([]);
  });

  it('a schema-invalid document: exit 6 with the JSON path of every problem on one line', async () => {
    writeFileSync(
      f('invalid.json'),
      JSON.stringify({
        schema: 'hyperenclave/config',
        version: 1,
        platform: 'mars',
        colour: 'red',
        memory: { hypervisorMiB: -4, epcMiB: 192 },
        backends: ['sev', 'tdx'],
        verifier: { endpoint: 'ftp://verifier.example' },
      }),
    );
    expect(
      await refusedByAll(f('invalid.json'), 6, [
        /\/: unknown property "colour"/,
        /\/platform: must be one of "auto", "linux", "emulated"/,
        /\/memory\/hypervisorMiB: must be >= 4/,
        /\/backends\/1: must be one of "none", "sev", "sev-es", "csv", "mktme"/,
        /\/verifier\/endpoint: must match pattern "\^https\?:\/\/"/,
      ]),
    ).toEqual([]);
    writeFileSync(f('version.json'), JSON.stringify({ schema: 'hyperenclave/config', version: 2, drtm: { enabled: 'yes' } }));
    expect(await refusedByAll(f('version.json'), 6, [/\/version: must be equal to constant/, /\/drtm\/enabled: must be boolean/])).toEqual([]);
  });

  it('a refused configuration changes nothing: no TPM started, no boot state, no AK', async () => {
    const s = await run('emulator', 'status', '--json');
    expect(s.code, s.stderr).toBe(0);
    expect(schemaProblems(s.json!)).toBeUndefined();
    expect(s.json!.running).toBe(false);
    for (const n of ['boot-state.json', 'ak.json', 'runtime-measurements.log']) expect(existsSync(f(n)), n).toBe(false);
  });

  it('--verifier without a URL and a configuration without verifier.endpoint is a usage error', async () => {
    writeFileSync(f('no-endpoint.json'), JSON.stringify({ schema: 'hyperenclave/config', version: 1, platform: 'emulated' }));
    for (const cmd of [['attest', '--verifier'], ['ak', 'enroll', '--verifier']]) {
      const r = await run('--config', f('no-endpoint.json'), ...cmd);
      expect(r.code, r.stderr).toBe(2);
      expect(errorLineProblem(r)).toBeUndefined();
      expect(r.stderr).toMatch(/--verifier: no URL given and the configuration has no verifier\.endpoint/);
    }
  });

  it.skipIf(!!noTpm)('a valid configuration is used: measure takes the image and the signer key from it', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const keyPair = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signer = keyPair();
    writeFileSync(f('signer.pem'), signer.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(f('signer.pub.pem'), signer.publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(f('other.pub.pem'), keyPair().publicKey.export({ type: 'spki', format: 'pem' }));
    const signed = f('signed.img');
    const s = await run('firmware', 'sign', hv, '--key', f('signer.pem'), '-o', signed, '--json');
    expect(s.code, s.stderr).toBe(0);
    expect(schemaProblems(s.json!)).toBeUndefined();

    writeFileSync(f('good.json'), JSON.stringify({ schema: 'hyperenclave/config', version: 1, image: signed, imageSigner: f('signer.pub.pem'), pcrPolicy: 'sha256-sha384' }));
    const m = await run('--config', f('good.json'), 'measure', '--json');
    expect(m.code, m.stderr).toBe(0);
    expect(schemaProblems(m.json!)).toBeUndefined();
    const image = m.json!.image as { id: string; signer: string | null };
    expect(image.id).toBe(s.json!.id);
    expect(image.signer).toBe((s.json!.signer as { keyId: string }).keyId);

    // The same image against a configured signer it was not signed with: refused, nothing extended.
    writeFileSync(f('other.json'), JSON.stringify({ schema: 'hyperenclave/config', version: 1, image: signed, imageSigner: f('other.pub.pem') }));
    const pcr = async () => ((await run('pcr', 'read', '--bank', 'sha256', '--pcrs', '12', '--json')).json!.banks as Record<string, Record<string, string>>).sha256!['12'];
    const before = await pcr();
    const refused = await run('--config', f('other.json'), 'measure');
    expect(refused.code, refused.stderr).toBe(4); // verification failed: the signature does not hold for the configured signer
    expect(errorLineProblem(refused)).toBeUndefined();
    expect(refused.stderr).toMatch(/not one of the 1 trusted keys/);
    expect(await pcr()).toBe(before);
  });
});
