import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, errorLineProblem, repoRoot, runCli } from '../helpers/cli.js';

/**
 * Issue 20: every file option refuses /dev/zero (a size cap checked while reading, never the
 * whole stream in memory) and a directory, with one line and exit 6; file-system refusals
 * (a full or read-only disk) are exit 9 with nothing half-written left behind.
 */

const missing = cliMissing() ?? (existsSync('/dev/zero') ? undefined : '/dev/zero absent');
if (missing) console.warn(`skipping bounded-input CLI tests: ${missing}`);

describe.skipIf(!!missing)('bounded and checked file input (built CLI as a process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'he-bounded-'));
  const state = join(dir, 'state');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const N = '00112233445566778899aabbccddeeff';
  const run = (args: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...args], { timeoutMs: 60_000 });

  /** Each file option once; FILE is replaced by /dev/zero, then by a directory. */
  const cases: string[][] = [
    ['eventlog', 'show', 'FILE'],
    ['eventlog', 'replay', 'FILE'],
    ['verify', 'FILE', '--nonce', N],
    ['verify', join(dir, 'ev.json'), '--policy', 'FILE', '--nonce', N],
    ['verify', '--tpm2-quote-message', 'FILE', '--tpm2-quote-signature', 'FILE', '--tpm2-quote-pcrs', 'FILE', '--ak-public', 'FILE', '--nonce', N],
    ['--config', 'FILE', 'status'],
    ['firmware', 'memmap', '--map', 'FILE'],
    ['firmware', 'build', 'FILE', '-o', join(dir, 'out.img'), '--arch', 'amd-svm'],
    ['firmware', 'build', join(repoRoot, 'package.json'), '-o', join(dir, 'out.img'), '--arch', 'amd-svm', '--raw', '--entry', '0', '--key', 'FILE'],
    ['measure', '--policy', 'FILE'],
    ['boot', '--drtm', 'FILE'],
    ['enclave', 'run', 'FILE'],
    ['verifier', 'enroll', '--request', 'FILE', '--challenge', join(dir, 'ch.json')],
  ];
  writeFileSync(join(dir, 'ev.json'), '{}');
  const aDir = join(dir, 'a-directory');
  mkdirSync(aDir);

  it.each(cases.map((c) => [c.join(' ')]))('/dev/zero and a directory are refused with one line and exit 6: %s', async (line) => {
    for (const file of ['/dev/zero', aDir]) {
      const args = line.split(' ').map((a) => (a === 'FILE' ? file : a));
      const r = await run(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(6);
      expect(errorLineProblem(r)).toBeUndefined();
      expect(r.stderr).toMatch(file === '/dev/zero' ? /limit|truncated|not a|unexpected|malformed/ : /directory/);
    }
  });

  it('verify --nonce "" is a usage error, not "use the bundle\'s own nonce"', async () => {
    const r = await run(['verify', join(dir, 'ev.json'), '--nonce', '']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--nonce/);
  });

  const canMount = process.getuid?.() === 0 && spawnSync('mount', ['--version']).status === 0;
  it.skipIf(!canMount)('a full, then read-only file system: exit 9 naming the path, no temporary file left (tmpfs mounted here)', async () => {
    const mnt = join(dir, 'tiny');
    mkdirSync(mnt);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { encoding: 'utf8' });
    if (m.status !== 0) return; // no CAP_SYS_ADMIN in this container: nothing to show
    try {
      const input = join(repoRoot, 'package-lock.json'); // larger than 64 KiB
      const full = await run(['firmware', 'build', input, '-o', join(mnt, 'out.img'), '--arch', 'amd-svm', '--raw', '--entry', '0']);
      expect(full.code, full.stderr).toBe(9);
      expect(full.stderr).toMatch(/no space left/);
      expect(errorLineProblem(full)).toBeUndefined();
      expect(readdirSync(mnt)).toEqual([]);
      expect(spawnSync('mount', ['-o', 'remount,ro', mnt]).status).toBe(0);
      const ro = await run(['firmware', 'build', join(repoRoot, 'package.json'), '-o', join(mnt, 'out.img'), '--arch', 'amd-svm', '--raw', '--entry', '0']);
      expect(ro.code, ro.stderr).toBe(9);
      expect(ro.stderr).toMatch(/read-only file system/);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
