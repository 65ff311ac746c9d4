import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/program.js';
import { cliMissing, errorLineProblem, runCli, schemaProblems } from '../helpers/cli.js';
import { skipUnless } from '../helpers/require.js';

/** Every command group registered, as `--help` and completion see the tree. */
const fullProgram = await buildProgram();

const missing = skipUnless('the bad-argument process tests', [['cli', cliMissing()]]);

/** Leaf commands of the commander tree: "platform", "tpm info", … */
function leafCommands(cmd: Command, prefix: string[] = []): string[] {
  return cmd.commands.length ? cmd.commands.flatMap((c) => leafCommands(c, [...prefix, c.name()])) : [prefix.join(' ')];
}

/**
 * At least one bad-argument run per leaf command: [command, arguments after the global options,
 * what the one-line message must say]. None of the files named here exist: a usage error must be
 * found before anything is read, opened or started.
 */
const CASES: [string, string[], RegExp][] = [
  ['platform', ['platform', 'extra'], /too many arguments for 'platform'/],
  ['tpm info', ['tpm', 'info', 'extra'], /too many arguments for 'info'/],
  ['tpm info', ['--tcti', 'bogus:x', 'tpm', 'info'], /--tcti: TCTI "bogus:x": unknown kind "bogus"/],
  ['pcr read', ['pcr', 'read', '--pcrs', '0-99'], /--pcrs: PCR index 99 out of range 0\.\.23/],
  ['pcr read', ['pcr', 'read', '--bank', 'md5'], /--bank: unknown hash algorithm "md5"/],
  ['pcr extend', ['pcr', 'extend', '24', '--data', 'x'], /PCR index: expected 0\.\.23, got "24"/],
  ['pcr extend', ['pcr', 'extend', '16'], /give exactly one of --data or --digest/],
  ['pcr extend', ['pcr', 'extend', '16', '--digest', 'sha256=zz'], /--digest: expected alg=hex, got "sha256=zz"/],
  ['eventlog show', ['eventlog', 'show', 'a.log', 'b.log', '--json'], /eventlog show --json: give one FILE/],
  ['eventlog replay', ['eventlog', 'replay', '--bogus'], /unknown option '--bogus'/],
  ['boot', ['boot', '--image'], /option '--image <file>' argument missing/],
  ['boot', ['boot', 'extra'], /too many arguments for 'boot'/],
  ['enable', ['enable', 'extra'], /too many arguments for 'enable'/],
  ['disable', ['disable', 'extra'], /too many arguments for 'disable'/],
  ['status', ['status', 'extra'], /too many arguments for 'status'/],
  ['enclave run', ['enclave', 'run'], /missing required argument 'manifest'/],
  ['enclave run', ['enclave', 'run', 'm.json', '--backend', 'tdx'], /--backend: one of none, sev, sev-es, csv, mktme, got "tdx"/],
  ['enclave run', ['enclave', 'run', 'm.json', '--ecall', 'x y'], /--ecall "x y": expected FN, FN:HEX or FN=TEXT/],
  ['enclave create', ['enclave', 'create', 'm.json', '--backend', 'tdx'], /--backend: one of .*, got "tdx"/],
  ['enclave list', ['enclave', 'list', 'extra'], /too many arguments for 'list'/],
  ['enclave destroy', ['enclave', 'destroy', 'abc'], /id must be a positive integer, got "abc"/],
  ['kv put', ['kv', 'put', 'k', '--store', 's'], /kv put: give the value as an argument or with --file, not both/],
  ['kv get', ['kv', 'get'], /missing required argument 'key'/],
  ['kv delete', ['kv', 'delete', 'k'], /kv: --store <dir> is required/],
  ['kv list', ['kv', 'list', 'extra'], /too many arguments for 'list'/],
  ['demo', ['demo', '--backend', 'tdx'], /--backend: one of .*, got "tdx"/],
  ['measure', ['measure', 'a.img', 'b.img'], /too many arguments for 'measure'/],
  ['ak create', ['ak', 'create', '--kind', 'dsa'], /--kind: ecc or rsa, got "dsa"/],
  ['ak enroll', ['ak', 'enroll'], /give --request FILE, or --challenge FILE --answer FILE, or --verifier URL/],
  ['ak enroll', ['ak', 'enroll', '--challenge', 'c.json'], /--challenge: --answer FILE is required/],
  ['ak enroll', ['ak', 'enroll', '--verifier', 'http://127.0.0.1:9', '--request', 'r.json'], /without --request\/--challenge files/],
  ['ak enroll', ['ak', 'enroll', '--verifier', 'notaurl'], /--verifier: expected http:\/\/host:port .*got "notaurl"/],
  ['attest', ['attest'], /give --nonce HEX .*, or --verifier \[URL\]/],
  ['attest', ['attest', '--nonce', 'zz'], /--nonce: expected 1 to 64 bytes of hex, got "zz"/],
  ['attest', ['attest', '--nonce', '00ff', '--pcrs', 'bogus'], /--pcrs: expected bank:list/],
  ['attest', ['attest', '--nonce', '00ff', '--verifier', 'http://127.0.0.1:9'], /give --nonce HEX .*, or --verifier/],
  ['attest', ['attest', '--verifier', 'notaurl'], /--verifier: expected http:\/\/host:port .*got "notaurl"/],
  ['attest', ['attest', '--raw-nonce', '--nonce', '00ff'], /attest --raw-nonce: --nonce HEX and --tpm2-tools DIR are required/],
  ['verify', ['verify'], /verify: give an evidence bundle, or --tpm2-quote-\* files/],
  ['verify', ['verify', '--tpm2-quote-message', 'm'], /--tpm2-quote-signature is required/],
  ['verify', ['verify', 'a.json', 'b.json', '--jwt', 'x.jwt'], /--jwt takes a single evidence file/],
  ['verifier enroll', ['verifier', 'enroll'], /give --request FILE --challenge FILE, or --answer FILE/],
  ['verifier enroll', ['verifier', 'enroll', '--request', 'r.json'], /--challenge FILE is required/],
  ['verifier serve', ['verifier', 'serve', '--listen', 'nohost'], /--listen: expected host:port, got "nohost"/],
  ['verifier serve', ['verifier', 'serve', '--listen', '127.0.0.1:70000'], /--listen: expected host:port/],
  ['verifier serve', ['verifier', 'serve', '--listen', '127.0.0.1:0', '--max-body', '-1'], /--max-body: expected a positive byte count, got "-1"/],
  ['verifier serve', ['verifier', 'serve', '--listen', '127.0.0.1:0', '--db', 'mysql://x'], /--db: expected postgresql:\/\/… or sqlite:<file>, got "mysql:\/\/x"/],
  ['verifier serve', ['verifier', 'serve', '--listen', '127.0.0.1:0', '--attest-interval', '0.5'], /--attest-interval: expected 0 \(off\) or at least 1 second, got "0.5"/],
  ['verifier serve', ['verifier', 'serve', '--listen', '127.0.0.1:0', '--tls-cert', 'c.pem'], /--tls-cert and --tls-key go together/],
  ['verifier hosts add', ['verifier', 'hosts', 'add', 'bad id', 'http://127.0.0.1:1'], /host id "bad id": use 1-128 of A-Z a-z 0-9 \. _ -/],
  ['verifier hosts add', ['verifier', 'hosts', 'add', 'h1', 'ftp://x'], /agent URL "ftp:\/\/x": expected http\(s\):\/\/host:port/],
  ['verifier hosts remove', ['verifier', 'hosts', 'remove'], /missing required argument 'host-id'/],
  ['agent serve', ['agent', 'serve', '--listen', 'nohost'], /--listen: expected host:port, got "nohost"/],
  ['agent serve', ['agent', 'serve', '--pcrs', 'bogus'], /--pcrs: expected bank:list/],
  ['firmware build', ['firmware', 'build', 'x.elf', '-o', 'y.img', '--arch', 'arm'], /--arch: expected one of intel-vmx, amd-svm, hygon, got "arm"/],
  ['firmware build', ['firmware', 'build', 'x.elf', '--arch', 'intel-vmx'], /required option '-o, --output <file>' not specified/],
  ['firmware build', ['firmware', 'build', 'x.elf', '-o', 'y.img', '--arch', 'intel-vmx', '--build-id', 'zz'], /--build-id: expected 1-32 bytes of hex/],
  ['firmware sign', ['firmware', 'sign', 'x.img'], /required option '--key <pem>' not specified/],
  ['firmware inspect', ['firmware', 'inspect', 'x.img', '--banks', 'md5'], /--banks: unknown bank "md5"/],
  ['firmware inspect', ['firmware', 'inspect', 'x.img', '--arch', 'arm'], /--arch: expected one of/],
  ['firmware reference', ['firmware', 'reference', 'x.img', '--banks', 'md5'], /--banks: unknown bank "md5"/],
  ['firmware reference', ['firmware', 'reference', 'x.img', '--initial', 'bogus'], /--initial: initial PCR value "bogus": expected BANK:PCR=HEX/],
  ['firmware uki-reference', ['firmware', 'uki-reference', 'x.efi', '--banks', 'md5'], /--banks: unknown bank "md5"/],
  ['firmware launch-env', ['firmware', 'launch-env', '-o', 'le.bin', '--arch', 'arm'], /--arch: expected one of/],
  ['firmware launch-env', ['firmware', 'launch-env', '-o', 'le.bin', '--arch', 'intel-vmx', '--env-version', '-1'], /--env-version: expected a byte count/],
  ['firmware memmap', ['firmware', 'memmap', '--epc-mib', 'x', '--map', 'absent.txt'], /--epc-mib: expected a positive integer, got "x"/],
  ['firmware memmap', ['firmware', 'memmap', '--base', 'zz', '--map', 'absent.txt'], /--base: expected a hex address/],
  ['emulator start', ['emulator', 'start', 'extra'], /too many arguments for 'start'/],
  ['emulator stop', ['emulator', 'stop', 'extra'], /too many arguments for 'stop'/],
  ['emulator status', ['emulator', 'status', 'extra'], /too many arguments for 'status'/],
  ['completion', ['completion'], /missing required argument 'shell'/],
  ['completion', ['completion', 'tcsh'], /completion: unknown shell "tcsh" \(bash, zsh or fish\)/],
];

describe.skipIf(!!missing)('bad arguments on every command (built CLI as a process)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-usage-'));
  const run = (args: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...args], { timeoutMs: 15_000 });
  afterAll(async () => {
    await run(['emulator', 'stop']);
    rmSync(state, { recursive: true, force: true });
  });

  it('every leaf command of the tree has at least one bad-argument case', () => {
    const leaves = leafCommands(fullProgram);
    expect(leaves.length).toBeGreaterThanOrEqual(32);
    expect(leaves.filter((c) => !CASES.some(([name]) => name === c))).toEqual([]);
    expect(CASES.filter(([name]) => !leaves.includes(name)).map(([name]) => name)).toEqual([]);
  });

  it('each exits 2 with one line on stderr naming the problem, nothing on stdout, no stack trace', async () => {
    const problems: string[] = [];
    // Two processes at a time (two cores).
    for (let i = 0; i < CASES.length; i += 2) {
      await Promise.all(
        CASES.slice(i, i + 2).map(async ([, args, says]) => {
          const r = await run(args);
          const line = `hyperenclave ${args.join(' ')}`;
          if (r.code !== 2) problems.push(`${line}: exit ${r.code}, want 2: ${r.stderr.trim()}`);
          else if (errorLineProblem(r)) problems.push(`${line}: ${errorLineProblem(r)}`);
          else if (!says.test(r.stderr)) problems.push(`${line}: message ${JSON.stringify(r.stderr.trim())} does not match ${says}`);
          else if (r.stdout !== '') problems.push(`${line}: printed on stdout: ${r.stdout}`);
        }),
      );
    }
    expect(problems).toEqual([]);
  });

  it('global options: an unknown platform and an unknown command are usage errors too', async () => {
    for (const [args, says] of [
      [['--platform', 'mars', 'status'], /mars/],
      [['no-such-command'], /unknown command 'no-such-command'/],
      [['--no-such-option', 'status'], /unknown option '--no-such-option'/],
    ] as const) {
      const r = await runCli([...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(errorLineProblem(r)).toBeUndefined();
      expect(r.stderr).toMatch(says);
    }
  });

  it('none of those runs started the emulated TPM or wrote boot or AK state', async () => {
    const s = await run(['emulator', 'status', '--json']);
    expect(s.code, s.stderr).toBe(0);
    expect(schemaProblems(s.json!)).toBeUndefined();
    expect(s.json!.running).toBe(false);
    for (const f of ['boot-state.json', 'ak.json', 'runtime-measurements.log']) expect(existsSync(join(state, f)), f).toBe(false);
  });
});
