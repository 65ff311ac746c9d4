import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, errorLineProblem, repoRoot, runCli, type CliResult } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { hostImageArch } from '../helpers/arch.js';
import { skipUnless } from '../helpers/require.js';

const missing = skipUnless('the bad-file process tests', [['cli', cliMissing()]]);
const noTpm = missing ?? skipUnless('the bad-file runs that need the emulated TPM', [['swtpm', swtpmAvailable({ ek: true })]]);

/** A bad-file run: the file that is missing or malformed, the exit code, and what the message must say besides the file's name. */
interface BadFile {
  args: string[];
  file: string;
  code: 3 | 6;
  says?: RegExp;
}

/** exit code, one line naming the file (and the offset or JSON path for a malformed one), nothing on stdout even with --json. */
function badFileProblem(c: BadFile, r: CliResult): string | undefined {
  const line = `hyperenclave ${c.args.join(' ')}`;
  if (r.code !== c.code) return `${line}: exit ${r.code}, want ${c.code}: ${r.stderr.trim()}`;
  const p = errorLineProblem(r);
  if (p) return `${line}: ${p}`;
  if (!r.stderr.includes(c.file)) return `${line}: the message does not name ${c.file}: ${r.stderr.trim()}`;
  if (c.says && !c.says.test(r.stderr)) return `${line}: message ${JSON.stringify(r.stderr.trim())} does not match ${c.says}`;
  if (r.stdout !== '') return `${line}: printed on stdout: ${r.stdout}`;
  return undefined;
}

/** Where a JSON syntax error stopped, as "position N". */
const POSITION = /not JSON \(.*at position \d+\)/;

describe.skipIf(!!missing)('missing and malformed files on every command that reads one (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-files-'));
  const f = (n: string) => join(state, n);
  // No configuration file: the runs do not depend on /etc/hyperenclave/config.json.
  const run = (args: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, '--json', ...args], { env: { HYPERENCLAVE_CONFIG: f('no-config.json') }, timeoutMs: 60_000 });
  const check = async (cases: BadFile[]) => {
    const problems: string[] = [];
    for (let i = 0; i < cases.length; i += 2) {
      await Promise.all(
        cases.slice(i, i + 2).map(async (c) => {
          const p = badFileProblem(c, await run(c.args));
          if (p) problems.push(p);
        }),
      );
    }
    return problems;
  };

  const hv = f('hv.img');
  const absent = (n: string) => f(`absent-${n}`);
  const junk = f('junk.bin');
  const truncImg = f('trunc.img');
  const truncJson = f('trunc.json');
  const brokenJson = f('broken.json');
  const wrongJson = f('wrong.json');
  const key = f('signer.pem');

  beforeAll(async () => {
    const b = await run(['firmware', 'build', join(repoRoot, 'test/fixtures/measure/tiny.elf'), '-o', hv, '--arch', hostImageArch()]);
    expect(b.code, b.stderr).toBe(0);
    // Neither a container, nor an ELF, nor an event log, nor a launch environment, nor PEM.
    writeFileSync(junk, 'this is not what any command expects. '.repeat(8));
    writeFileSync(truncImg, readFileSync(hv).subarray(0, 100));
    writeFileSync(truncJson, '{"schema": "hyperenclave/verifier-policy", "version": ');
    writeFileSync(brokenJson, '{"schema": "hyperenclave/x" "version": 1}');
    writeFileSync(wrongJson, JSON.stringify({ schema: 'hyperenclave/nothing', version: 1 }));
    writeFileSync(f('request-wrong.json'), JSON.stringify({ ekCertificates: ['not a certificate'], ekPublic: 1, akPublic: 'AA==' }));
    writeFileSync(f('answer-wrong.json'), JSON.stringify({ id: 'ab' }));
    writeFileSync(f('challenge-wrong.json'), JSON.stringify({ schema: 'hyperenclave/something-else', id: 'ab' }));
    writeFileSync(f('map-bad.txt'), '0x0 0x9fbff System RAM\nnonsense\n');
    writeFileSync(key, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  });
  afterAll(async () => {
    if (!noTpm) await run(['emulator', 'stop']);
    rmSync(state, { recursive: true, force: true });
  });

  it('a missing file: exit 3 and one line naming it', async () => {
    const cases: BadFile[] = [
      { args: ['enable', '--image', absent('hv.img')], file: absent('hv.img'), code: 3 },
      { args: ['boot', '--image', hv, '--drtm', absent('le.bin')], file: absent('le.bin'), code: 3 },
      { args: ['measure', hv, '--policy', absent('policy.json')], file: absent('policy.json'), code: 3 },
      { args: ['eventlog', 'show', absent('log.bin')], file: absent('log.bin'), code: 3 },
      { args: ['eventlog', 'replay', absent('log.bin')], file: absent('log.bin'), code: 3 },
      { args: ['enclave', 'run', absent('manifest.json')], file: absent('manifest.json'), code: 3 },
      { args: ['enclave', 'create', absent('manifest.json')], file: absent('manifest.json'), code: 3 },
      { args: ['verify', absent('ev.json'), '--nonce', '00ff'], file: absent('ev.json'), code: 3 },
      { args: ['verify', wrongJson, '--policy', absent('policy.json'), '--nonce', '00ff'], file: absent('policy.json'), code: 3 },
      {
        args: ['verify', '--tpm2-quote-message', absent('q.msg'), '--tpm2-quote-signature', junk, '--tpm2-quote-pcrs', junk, '--ak-public', junk, '--nonce', '00ff'],
        file: absent('q.msg'),
        code: 3,
      },
      { args: ['verifier', 'enroll', '--request', absent('req.json'), '--challenge', f('ch.json')], file: absent('req.json'), code: 3 },
      { args: ['verifier', 'enroll', '--answer', absent('ans.json')], file: absent('ans.json'), code: 3 },
      { args: ['verifier', 'serve', '--listen', '127.0.0.1:0', '--policy', absent('policy.json')], file: absent('policy.json'), code: 3 },
      { args: ['firmware', 'build', absent('hv.elf'), '-o', f('o.img'), '--arch', hostImageArch()], file: absent('hv.elf'), code: 3 },
      { args: ['firmware', 'build', junk, '--raw', '-o', f('o.img'), '--arch', hostImageArch(), '--key', absent('key.pem')], file: absent('key.pem'), code: 3 },
      { args: ['firmware', 'sign', absent('hv.img'), '--key', key, '-o', f('o.img')], file: absent('hv.img'), code: 3 },
      { args: ['firmware', 'sign', hv, '--key', absent('key.pem'), '-o', f('o.img')], file: absent('key.pem'), code: 3 },
      { args: ['firmware', 'inspect', absent('hv.img')], file: absent('hv.img'), code: 3 },
      { args: ['firmware', 'inspect', hv, '--trusted-key', absent('key.pem')], file: absent('key.pem'), code: 3 },
      { args: ['firmware', 'reference', absent('hv.img')], file: absent('hv.img'), code: 3 },
      { args: ['firmware', 'reference', hv, '--launch-env', absent('le.bin')], file: absent('le.bin'), code: 3 },
      { args: ['firmware', 'reference', hv, '--policy', absent('policy.json')], file: absent('policy.json'), code: 3 },
      { args: ['firmware', 'launch-env', '-o', f('le.bin'), '--arch', hostImageArch(), '--payload', absent('payload.bin')], file: absent('payload.bin'), code: 3 },
      { args: ['firmware', 'memmap', '--map', absent('map.txt')], file: absent('map.txt'), code: 3 },
    ];
    expect(await check(cases)).toEqual([]);
  });

  it('a malformed file: exit 6 and one line naming it with the byte offset or JSON path', async () => {
    const cases: BadFile[] = [
      { args: ['enable', '--image', truncImg], file: truncImg, code: 6, says: /image: truncated header: 100 bytes, the header needs 256 \(ends at offset 0x100\)/ },
      { args: ['boot', '--image', hv, '--drtm', junk], file: junk, code: 6, says: /launch environment \S+: bad magic at offset 0x0/ },
      { args: ['measure', hv, '--policy', brokenJson], file: brokenJson, code: 6, says: /pcr policy \S+: not JSON \(.*at position 28\)/ },
      { args: ['measure', hv, '--policy', wrongJson], file: wrongJson, code: 6, says: /: \/: must have required property 'name'.*\/schema: must be equal to constant/ },
      { args: ['eventlog', 'show', junk], file: junk, code: 6, says: /: event log: .*\[.*offset \d+ \(0x[0-9a-f]+\)\]/ },
      { args: ['eventlog', 'replay', junk], file: junk, code: 6, says: /: event log: .*\[.*offset \d+ \(0x[0-9a-f]+\)\]/ },
      { args: ['enclave', 'run', truncJson], file: truncJson, code: 6, says: POSITION },
      { args: ['enclave', 'create', wrongJson], file: wrongJson, code: 6, says: /: \/: must have required property 'name'.*\/schema: must be equal to constant/ },
      { args: ['verify', truncJson, '--nonce', '00ff'], file: truncJson, code: 6, says: POSITION },
      { args: ['verify', wrongJson, '--nonce', '00ff'], file: wrongJson, code: 6, says: /\/schema: must be equal to constant/ },
      { args: ['verify', wrongJson, '--policy', truncJson, '--nonce', '00ff'], file: truncJson, code: 6, says: POSITION },
      { args: ['verifier', 'enroll', '--request', f('request-wrong.json'), '--challenge', f('ch.json')], file: f('request-wrong.json'), code: 6, says: /enroll request: \/ekPublic: expected/ },
      { args: ['verifier', 'enroll', '--answer', f('answer-wrong.json')], file: f('answer-wrong.json'), code: 6, says: /\/secret: expected/ },
      { args: ['verifier', 'enroll', '--answer', brokenJson], file: brokenJson, code: 6, says: /not JSON \(.*at position 28\)/ },
      { args: ['verifier', 'serve', '--listen', '127.0.0.1:0', '--policy', wrongJson], file: wrongJson, code: 6, says: /\/schema: must be equal to constant/ },
      { args: ['verifier', 'serve', '--listen', '127.0.0.1:0', '--policy', truncJson], file: truncJson, code: 6, says: POSITION },
      { args: ['firmware', 'build', junk, '-o', f('o.img'), '--arch', hostImageArch()], file: junk, code: 6, says: /ELF \S+: bad magic at offset 0x0/ },
      // PEM has no offsets: naming the file is what there is to name.
      { args: ['firmware', 'build', junk, '--raw', '-o', f('o.img'), '--arch', hostImageArch(), '--key', junk], file: junk, code: 6, says: /signing key \S+: not a PEM private key/ },
      { args: ['firmware', 'sign', junk, '--key', key, '-o', f('o.img')], file: junk, code: 6, says: /image: bad magic at offset 0x0/ },
      { args: ['firmware', 'inspect', truncImg], file: truncImg, code: 6, says: /truncated header: 100 bytes.*offset 0x100/ },
      { args: ['firmware', 'reference', junk], file: junk, code: 6, says: /image: bad magic at offset 0x0/ },
      { args: ['firmware', 'reference', hv, '--launch-env', junk], file: junk, code: 6, says: /launch environment \S+: bad magic at offset 0x0/ },
      { args: ['firmware', 'reference', hv, '--policy', wrongJson], file: wrongJson, code: 6, says: /\/schema: must be equal to constant/ },
      { args: ['firmware', 'memmap', '--map', f('map-bad.txt')], file: f('map-bad.txt'), code: 6, says: /map-bad\.txt:2: expected "START END TYPE"/ },
    ];
    expect(await check(cases)).toEqual([]);
    // Nothing above was written where a refused input should have produced output.
    for (const out of ['o.img', 'le.bin', 'ch.json']) expect(() => readFileSync(f(out)), out).toThrow(/ENOENT/);
  });

  it.skipIf(!!noTpm)('measure, boot and ak enroll on the emulated TPM: missing and malformed images and challenges', async () => {
    const cases: BadFile[] = [
      { args: ['measure', absent('hv.img')], file: absent('hv.img'), code: 3 },
      { args: ['measure', junk], file: junk, code: 6, says: /image: bad magic at offset 0x0/ },
      { args: ['measure', hv, '--signer', absent('signer.pem')], file: absent('signer.pem'), code: 3 },
      { args: ['boot', '--image', absent('hv.img')], file: absent('hv.img'), code: 3 },
      { args: ['ak', 'enroll', '--challenge', absent('ch.json'), '--answer', f('ans.json')], file: absent('ch.json'), code: 3 },
      { args: ['ak', 'enroll', '--challenge', f('challenge-wrong.json'), '--answer', f('ans.json')], file: f('challenge-wrong.json'), code: 6, says: /enrollment challenge: \/schema: expected/ },
      { args: ['ak', 'enroll', '--challenge', truncJson, '--answer', f('ans.json')], file: truncJson, code: 6, says: POSITION },
    ];
    // One at a time: they share the emulated TPM, started by the first.
    const problems: string[] = [];
    for (const c of cases) {
      const p = badFileProblem(c, await run(c.args));
      if (p) problems.push(p);
    }
    expect(problems).toEqual([]);

    // A malformed image stops boot at verify-image: nothing measured, the state file says why.
    const b = await run(['boot', '--image', truncImg]);
    expect(badFileProblem({ args: ['boot', '--image', truncImg], file: truncImg, code: 6, says: /truncated header: 100 bytes/ }, b)).toBeUndefined();
    const state0 = JSON.parse(readFileSync(f('boot-state.json'), 'utf8')) as { phase: string; steps: { name: string; status: string }[]; error: string };
    expect(state0.phase).toBe('failed');
    expect(state0.steps.find((s) => s.status === 'failed')?.name).toBe('verify-image');
    expect(state0.steps.map((s) => s.name)).not.toContain('measure');
    expect(state0.error).toContain(truncImg);
    expect(() => readFileSync(f('ans.json'))).toThrow(/ENOENT/);
  });
});
