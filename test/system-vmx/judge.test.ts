import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/cli.js';

/**
 * test/system-vmx/judge.mjs fed synthetic Bochs consoles (init.sh's "@@HE:" protocol plus the
 * hypervisor's "[hv]" lines): a full run passes, also when [hv] lines land inside guest lines; a
 * CPU without its VMX non-root line, a wrong ECALL output, a missing check and an unlisted one
 * each fail and are named. The expected SHA-256("abc") is FIPS 180-2's vector, written here.
 */
const judge = join(repoRoot, 'test', 'system-vmx', 'judge.mjs');
const listFile = join(repoRoot, 'test', 'system-vmx', 'expected-checks.txt');
const guestChecks = readFileSync(listFile, 'utf8')
  .split('\n')
  .map((l) => l.replace(/#.*/, '').trim())
  .filter((n) => n && n !== 'booted' && n !== 'vmx-ecall');
const ABC = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';

function console_(opts: { checks?: string[]; output?: string; cpus?: number[]; extra?: string[] } = {}): string {
  const cpus = opts.cpus ?? [0, 1];
  return [
    '@@HE:BOOTED kernel=6.1.0-synthetic cpus=2 uptime=8.7',
    ...cpus.map((c) => `[hv] cpu${c}: running as guest (VMX non-root), first exit reason 10`),
    ...(opts.checks ?? guestChecks).map((n) => `@@HE:CHECK ${n} PASS synthetic`),
    `@@HE:ECALL rc=0 enclave id=1 pages=19 mrenclave-match=1 ecall=2 resumes=0 output=${opts.output ?? ABC}`,
    ...cpus.map((c) => `[hv] cpu${c}: handed back to Linux after 42 exits (VMXOFF)`),
    ...(opts.extra ?? []),
    '@@HE:DONE uptime=11.0',
    '',
  ].join('\n');
}

function run(text: string) {
  const dir = mkdtempSync(join(tmpdir(), 'he-vmx-judge-'));
  try {
    writeFileSync(join(dir, 'console.txt'), text);
    const r = spawnSync(process.execPath, [judge, join(dir, 'console.txt'), '--timed-out', '0', '--cpus', '2', '--expected', listFile], { encoding: 'utf8' });
    return { code: r.status, out: r.stdout + r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('system-vmx judge', () => {
  it('the SHA-256 vector in this test is FIPS 180-2\'s (and Node agrees)', () => {
    expect(createHash('sha256').update('abc').digest('hex')).toBe(ABC);
  });
  it('passes a full run and names all five issue checks', () => {
    const r = run(console_());
    expect(r.out).not.toMatch(/^FAIL/m);
    for (const n of ['vmx-launch', 'vmx-cpuid', 'ept-protects', 'vmx-ecall', 'vmx-disable']) expect(r.out).toMatch(new RegExp(`^PASS ${n}:`, 'm'));
    expect(r.code).toBe(0);
  });
  it('takes [hv] lines out of guest lines they landed in', () => {
    const text = console_().replace('@@HE:CHECK ept-protects PASS synthetic', '@@HE:CHECK ept-pro[hv] cpu1: host read at 0x3c000000 refused\ntects PASS synthetic');
    const r = run(text);
    expect(r.out).toMatch(/^PASS ept-protects: synthetic/m);
    expect(r.code).toBe(0);
  });
  it('fails vmx-launch when a CPU never reported VMX non-root', () => {
    const r = run(console_({ cpus: [0] }));
    expect(r.out).toMatch(/^FAIL vmx-launch: .*CPUs 0 of 2/m);
    expect(r.out).toMatch(/^FAIL vmx-disable:/m);
    expect(r.code).toBe(1);
  });
  it('fails vmx-ecall on an output that is not SHA-256("abc")', () => {
    const r = run(console_({ output: '00'.repeat(32) }));
    expect(r.out).toMatch(/^FAIL vmx-ecall:/m);
    expect(r.code).toBe(1);
  });
  it('fails a missing check and an unlisted one', () => {
    const r = run(console_({ checks: guestChecks.filter((n) => n !== 'ept-protects'), extra: ['@@HE:CHECK surprise PASS x'] }));
    expect(r.out).toMatch(/^FAIL ept-protects: did not report/m);
    expect(r.out).toMatch(/^FAIL surprise: reported but not in/m);
    expect(r.code).toBe(1);
  });
});
