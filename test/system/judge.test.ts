import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot } from '../helpers/cli.js';
import { skipUnless } from '../helpers/require.js';

/**
 * judge.mjs fed synthetic serial consoles: every expected check reporting passes; one expected
 * check missing (a crashed probe) fails and names it; an unlisted check fails; --partial lists the
 * missing ones as NOT RUN. The console lines follow test/system/init.sh's "@@HE:" protocol.
 */
const judge = join(repoRoot, 'test', 'system', 'judge.mjs');
const listFile = join(repoRoot, 'test', 'system', 'expected-checks.txt');
// "name @mode,…" limits a check to those modes; untagged checks belong to the bios and uefi modes.
// The synthetic consoles here are SeaBIOS (mode bios) runs.
const expected = readFileSync(listFile, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean)
  .map((l) => l.split(/\s+@/))
  .filter(([, tag]) => !tag || tag.split(',').includes('bios'))
  .map(([name]) => name!);
// judge.mjs loads the schema compiler from dist/.
const missing = skipUnless('system-tier judge tests', [['cli', cliMissing()]]);

function console_(names: string[], extra: string[] = []): string {
  return [
    'SeaBIOS (version synthetic)',
    '@@HE:BOOTED kernel=6.1.0-synthetic cpus=1',
    // The hypervisor's own launch line: host tables inside the reservation (judge's host-tables-private).
    '[hv] cpu0: VMRUN guest RIP 0xffffffff81000000 host GDT 0x3c001000 IDT 0x3c002000, leave CR3 0x3c003000',
    // The hypervisor's log of the DMA fault dma-blocked-hv provokes (judge requires it).
    '[hv] IOMMU: DMA fault IO_PAGE_FAULT from device 00:04.0 at 0x3c000000 (flags 0x0): blocked',
    ...names.map((n) => `@@HE:CHECK ${n} PASS synthetic`),
    ...extra,
    '@@HE:DONE',
    '',
  ].join('\n');
}

function runJudge(text: string, args: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'he-judge-'));
  try {
    writeFileSync(join(dir, 'console.txt'), text);
    const r = spawnSync(process.execPath, [judge, join(dir, 'console.txt'), join(dir, 'out'), '--timed-out', '0', '--pcr', '12', ...args], { encoding: 'utf8' });
    return { code: r.status, out: r.stdout + r.stderr, result: r.status !== null && r.status < 2 ? JSON.parse(readFileSync(join(dir, 'out', 'result.json'), 'utf8')) : undefined };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!!missing)('system-tier judge: the expected checks (test/system/expected-checks.txt)', () => {
  it('the list names each check once and holds the guest and host checks', () => {
    expect(new Set(expected).size).toBe(expected.length);
    for (const n of ['cpu-svm', 'npt-protects', 'booted', 'scenario-finished', 'host-tables-private', 'attest-remote', 'verify-outside']) expect(expected).toContain(n);
  });

  it('passes when a hypervisor line lands inside a guest check line (the serial port is shared)', () => {
    const [first, ...others] = expected;
    const split = `@[hv] cpu0: enclave 7 TCS 0x0: interrupted ECALL aborted by the caller\n@HE:CHECK ${first} PASS synthetic`;
    const r = runJudge(console_(others, [split]));
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(new RegExp(`PASS\\s+${first}\\s+synthetic`));
  });

  it('passes when every expected check reports PASS', () => {
    const r = runJudge(console_(expected));
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(new RegExp(`SYSTEM TIER: PASSED \\(\\d+ checks; all ${expected.length} expected checks reported\\)`));
  });

  it('fails when one expected check did not report (a crashed probe), naming it', () => {
    const r = runJudge(console_(expected.filter((n) => n !== 'ecall-sealer')));
    expect(r.code, r.out).toBe(1);
    expect(r.out).toMatch(/^FAIL {2}ecall-sealer\s+did not report \(expected by .*expected-checks\.txt\)/m);
    expect(r.out).toMatch(/SYSTEM TIER: FAILED \(1 of \d+ checks\)/);
    expect(r.result.checks.find((c: { name: string }) => c.name === 'ecall-sealer')).toMatchObject({ ok: false, source: 'judge' });
  });

  it('fails dma-blocked-hv when the hypervisor logged no DMA fault, whatever the guest said', () => {
    const text = console_(expected).split('\n').filter((l) => !l.includes('IOMMU: DMA fault')).join('\n');
    const r = runJudge(text);
    expect(r.code, r.out).toBe(1);
    expect(r.out).toMatch(/^FAIL {2}dma-blocked-hv\s+synthetic; but no "\[hv\] IOMMU: DMA fault …" line/m);
  });

  it('fails when the guest died early: every check after it is named', () => {
    const upTo = expected.indexOf('enclave-lifecycle');
    const r = runJudge(console_(expected.slice(0, upTo)));
    expect(r.code).toBe(1);
    for (const n of expected.slice(upTo).filter((n) => !['booted', 'scenario-finished', 'host-tables-private'].includes(n))) expect(r.out).toContain(`FAIL  ${n}`);
  });

  it('fails on a passing check the list does not name', () => {
    const r = runJudge(console_(expected, ['@@HE:CHECK brand-new-probe PASS synthetic']));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/FAIL {2}unlisted:brand-new-probe\s+check "brand-new-probe" passed but is not listed/);
  });

  it('--partial 1 (run.sh --no-image) lists the unreported checks as NOT RUN instead of failing', () => {
    const r = runJudge(console_(expected.slice(0, 5)), ['--partial', '1']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/NOT RUN {2}verify-outside/);
    expect(r.out).toMatch(new RegExp(`PASSED \\(\\d+ checks; \\d+ of ${expected.length} expected checks reported \\(partial run\\)\\)`));
  });

  it('cpus-many comes from the many-CPU console: every CPU must run as a guest and be handed back', () => {
    const dir = mkdtempSync(join(tmpdir(), 'he-judge-many-'));
    try {
      const many = (n: number) =>
        [
          '@@HE:BOOTED kernel=6.1.0-synthetic cpus=12',
          ...Array.from({ length: n }, (_, c) => `[hv] cpu${c}: running as guest, first exit 0x72`),
          // an [hv] line landing inside the guest's line must not hide the check
          '@@HE:CHECK cpus-many PASS 12 of 12 CPUs ans[hv] cpu3: something\nwered HyperEnclave',
          ...Array.from({ length: n }, (_, c) => `[hv] cpu${c}: handed back to Linux after 9 exits`),
          '@@HE:DONE',
          '',
        ].join('\n');
      const others = expected.filter((n) => n !== 'cpus-many');
      writeFileSync(join(dir, 'many.txt'), many(12));
      const ok = runJudge(console_(others), ['--many-console', join(dir, 'many.txt'), '--many-cpus', '12']);
      expect(ok.code, ok.out).toBe(0);
      expect(ok.out).toMatch(/PASS {2}cpus-many\s+12 of 12 CPUs answered HyperEnclave; \[hv\]: 12 of 12 CPUs ran as guests, 12 handed back/);
      writeFileSync(join(dir, 'many.txt'), many(11));
      const short = runJudge(console_(others), ['--many-console', join(dir, 'many.txt'), '--many-cpus', '12']);
      expect(short.code).toBe(1);
      expect(short.out).toMatch(/FAIL {2}cpus-many\s+.*11 of 12 CPUs ran as guests/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
