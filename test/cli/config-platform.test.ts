import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { cliMissing, runCli, stdoutJson } from '../helpers/cli.js';
import { skipUnless } from '../helpers/require.js';

/**
 * The configuration's `platform` and `stateDir` select the platform and the state directory for
 * every command; a flag on the command line wins; an invalid --config is refused by any command.
 */
const missing = skipUnless('config platform tests', [['cli', cliMissing()], ['swtpm', swtpmAvailable()]]);

describe.skipIf(!!missing)('configuration platform and stateDir (built CLI as a process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'he-cfg-platform-'));
  const state = join(dir, 'state-from-config');
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ schema: 'hyperenclave/config', version: 1, platform: 'emulated', stateDir: state }));
  const env = { HYPERENCLAVE_PLATFORM: '', HYPERENCLAVE_CONFIG: '' };
  afterAll(async () => {
    await runCli(['--config', cfg, 'emulator', 'stop'], { env });
    rmSync(dir, { recursive: true, force: true });
  });

  it('platform and state directory come from the file when no flag is given', async () => {
    const p = await runCli(['--config', cfg, '--json', 'platform'], { env });
    expect(p.code, p.stderr).toBe(0);
    expect(stdoutJson(p).platform).toBe('emulated');
    const ak = await runCli(['--config', cfg, '--json', 'ak', 'create'], { env, timeoutMs: 60_000 });
    expect(ak.code, ak.stderr).toBe(0);
    expect(existsSync(state) && readdirSync(state).some((f) => f.startsWith('ak'))).toBe(true);
  });

  it('a flag wins over the file', async () => {
    const p = await runCli(['--config', cfg, '--platform', 'linux', '--json', 'platform'], { env });
    expect(p.code, p.stderr).toBe(0);
    expect(stdoutJson(p).platform).toBe('linux');
  });

  it('an invalid --config is refused by any command, with the JSON path', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ schema: 'hyperenclave/config', version: 1, platform: 'mars' }));
    for (const args of [['platform'], ['tpm', 'info'], ['enclave', 'list'], ['status']]) {
      const r = await runCli(['--config', bad, ...args], { env });
      expect(r.code, args.join(' ')).toBe(6);
      expect(r.stderr.trim().split('\n')).toEqual([`hyperenclave: ${bad}: /platform: must be one of "auto", "linux", "emulated"`]);
    }
  });
});
