import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createBackend } from './registry.js';
import {
  type CpuidRegs,
  decodeCpuVendor,
  decodeCpuid7,
  decodeCpuid8000001F,
  decodeTmeActivate,
  decodeTmeCapability,
  detectPlatformFacts,
  hardwareSupport,
} from './detect.js';
import { BackendError } from './errors.js';
import { EmulatedKeySlotAllocator } from './keyslots.js';
import { skipUnless } from '../../../test/helpers/require.js';

/** Vendor strings as CPUID leaf 0 returns them (EBX, EDX, ECX little-endian ASCII). */
function vendorRegs(v: string, maxLeaf = 0x10): CpuidRegs {
  const b = Buffer.from(v, 'latin1');
  return { eax: maxLeaf, ebx: b.readUInt32LE(0), edx: b.readUInt32LE(4), ecx: b.readUInt32LE(8) };
}

describe('CPUID / MSR decoders (synthetic register values, bit layouts from AMD APM vol. 3 and the Intel MKTME spec)', () => {
  it('vendor string from leaf 0', () => {
    expect(decodeCpuVendor({ eax: 0x10, ebx: 0x68747541, edx: 0x69746e65, ecx: 0x444d4163 })).toBe('AuthenticAMD');
    expect(decodeCpuVendor(vendorRegs('HygonGenuine'))).toBe('HygonGenuine');
    expect(decodeCpuVendor({ eax: 0x1b, ebx: 0x756e6547, edx: 0x49656e69, ecx: 0x6c65746e })).toBe('GenuineIntel');
  });

  it('CPUID 0x8000001F: feature bits, C-bit, address reduction, ASID limits', () => {
    // SME|SEV|SEV-ES|SNP|VMPL, C-bit 51, 5 bits reduction, 4 VMPLs, 509 guests, min SEV ASID 100.
    const leaf = decodeCpuid8000001F({ eax: 0b11_1011, ebx: 51 | (5 << 6) | (4 << 12), ecx: 509, edx: 100 });
    expect(leaf).toMatchObject({ sme: true, sev: true, pageFlushMsr: false, sevEs: true, sevSnp: true, vmpl: true, cBitPosition: 51, physAddrReduction: 5, vmplCount: 4, maxEncryptedGuests: 509, minSevAsid: 100 });
    const sevOnly = decodeCpuid8000001F({ eax: 0b11, ebx: 47 | (1 << 6), ecx: 15, edx: 1 });
    expect(sevOnly).toMatchObject({ sme: true, sev: true, sevEs: false, sevSnp: false, cBitPosition: 47, physAddrReduction: 1, maxEncryptedGuests: 15, minSevAsid: 1 });
  });

  it('CPUID 7: TME (ECX[13]) and PCONFIG (EDX[18])', () => {
    expect(decodeCpuid7({ eax: 0, ebx: 0, ecx: 1 << 13, edx: 1 << 18 })).toEqual({ tme: true, pconfig: true });
    expect(decodeCpuid7({ eax: 0, ebx: 0, ecx: ~(1 << 13) >>> 0, edx: 0 })).toEqual({ tme: false, pconfig: false });
  });

  it('IA32_TME_CAPABILITY (0x981) and IA32_TME_ACTIVATE (0x982)', () => {
    const cap = decodeTmeCapability(1n | (1n << 31n) | (6n << 32n) | (63n << 36n));
    expect(cap).toEqual({ aesXts128: true, aesXts128Integrity: false, aesXts256: false, bypassSupported: true, maxKeyIdBits: 6, maxKeys: 63 });
    const act = decodeTmeActivate(0x0001_0006_0000_0003n);
    expect(act).toEqual({ locked: true, enabled: true, keySelect: 0, saveKeyForStandby: false, tmePolicy: 0, bypassEnabled: false, keyIdBits: 6, cryptoAlgorithms: 1 });
    expect(decodeTmeActivate(0n)).toMatchObject({ locked: false, enabled: false, keyIdBits: 0 });
  });
});

describe('detection from a synthetic machine root', () => {
  const root = mkdtempSync(join(tmpdir(), 'detect-root-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('AMD with SEV/SEV-ES exposed through CPUID, /dev/sev and kvm_amd: sev and sev-es available, csv/mktme not', () => {
    mkdirSync(join(root, 'proc'), { recursive: true });
    mkdirSync(join(root, 'dev'), { recursive: true });
    mkdirSync(join(root, 'sys/module/kvm_amd/parameters'), { recursive: true });
    writeFileSync(join(root, 'proc/cpuinfo'), 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sme sev sev_es\n\n');
    writeFileSync(join(root, 'dev/sev'), '');
    writeFileSync(join(root, 'sys/module/kvm_amd/parameters/sev'), 'Y\n');
    writeFileSync(join(root, 'sys/module/kvm_amd/parameters/sev_es'), 'N\n');
    const cpuid = (leaf: number): CpuidRegs => {
      if (leaf === 0) return vendorRegs('AuthenticAMD');
      if (leaf === 0x80000000) return { eax: 0x80000021, ebx: 0, ecx: 0, edx: 0 };
      if (leaf === 0x8000001f) return { eax: 0b1011, ebx: 47 | (1 << 6), ecx: 509, edx: 100 };
      return { eax: 0, ebx: 0, ecx: 0, edx: 0 };
    };
    const facts = detectPlatformFacts({ root, cpuid });
    expect(facts.vendor).toBe('AuthenticAMD');
    expect(facts.amdLeaf?.maxEncryptedGuests).toBe(509);
    expect(hardwareSupport('sev', facts)).toEqual({ available: true, reason: 'SEV: supported by this CPU and firmware' });
    const es = hardwareSupport('sev-es', facts);
    expect(es.available).toBe(false);
    expect(es.reason).toBe('SEV-ES: kvm_amd parameter sev_es=N');
    expect(hardwareSupport('csv', facts).reason).toMatch(/CPU vendor AuthenticAMD \(need HygonGenuine\)/);
    expect(hardwareSupport('mktme', facts).reason).toMatch(/^MKTME: CPU vendor AuthenticAMD/);
  });

  it('AMD without the SEV bit and without /dev/sev: the reason names both', () => {
    const r2 = mkdtempSync(join(tmpdir(), 'detect-root2-'));
    try {
      mkdirSync(join(r2, 'proc'));
      writeFileSync(join(r2, 'proc/cpuinfo'), 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu svm\n\n');
      const cpuid = (leaf: number): CpuidRegs =>
        leaf === 0 ? vendorRegs('AuthenticAMD') : leaf === 0x80000000 ? { eax: 0x8000001f, ebx: 0, ecx: 0, edx: 0 } : leaf === 0x8000001f ? { eax: 0b1, ebx: 0, ecx: 0, edx: 0 } : { eax: 0, ebx: 0, ecx: 0, edx: 0 };
      const r = hardwareSupport('sev', detectPlatformFacts({ root: r2, cpuid }));
      expect(r.available).toBe(false);
      expect(r.reason).toBe(`SEV: CPUID 0x8000001F EAX bit 1 (SEV) clear; ${r2}/dev/sev absent; kvm_amd not loaded`);
    } finally {
      rmSync(r2, { recursive: true, force: true });
    }
  });

  it('Intel with TME + PCONFIG and MKTME activated in the MSRs: mktme available', () => {
    const r3 = mkdtempSync(join(tmpdir(), 'detect-root3-'));
    try {
      mkdirSync(join(r3, 'proc'));
      writeFileSync(join(r3, 'proc/cpuinfo'), 'processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx tme pconfig\n\n');
      const msrs: Record<number, bigint> = { 0x981: 1n | (6n << 32n) | (63n << 36n), 0x982: 0x0001_0006_0000_0003n };
      const facts = detectPlatformFacts({ root: r3, readMsr: (m) => msrs[m]! });
      expect(facts.intel.activate?.keyIdBits).toBe(6);
      expect(hardwareSupport('mktme', facts).available).toBe(true);
      const off = detectPlatformFacts({ root: r3, readMsr: (m) => (m === 0x982 ? 0n : msrs[m]!) });
      expect(hardwareSupport('mktme', off).reason).toBe('MKTME: IA32_TME_ACTIVATE lock/enable clear (TME off in firmware); IA32_TME_ACTIVATE KeyID bits = 0 (MKTME not enabled)');
    } finally {
      rmSync(r3, { recursive: true, force: true });
    }
  });
});

describe('detection on this machine', () => {
  const facts = detectPlatformFacts();
  const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/));
  const allocator = new EmulatedKeySlotAllocator({});

  for (const [kind, flag] of [['sev', 'sev'], ['sev-es', 'sev_es'], ['csv', 'sev'], ['mktme', 'tme']] as const) {
    const has = flags.has(flag);
    skipUnless(`the absent-${kind} check`, [['hardware-absent', has && `this machine has "${flag}"`]]);
    it.skipIf(has)(`${kind}: reported absent with reasons, and choosing it is a clear error`, () => {
      const r = hardwareSupport(kind, facts);
      expect(r.available).toBe(false);
      expect(r.reason).toMatch(new RegExp(`^${kind === 'mktme' ? 'MKTME' : kind.toUpperCase()}: `));
      if (kind !== 'mktme') expect(r.reason).toContain('/dev/sev absent');
      else expect(r.reason).toContain('no "tme" flag (CPUID.7.ECX[13])');
      expect(() => createBackend(kind, { facts, allocator })).toThrow(BackendError);
      expect(() => createBackend(kind, { facts, allocator })).toThrow(r.reason);
    });
  }

  it('none is always available', () => {
    expect(createBackend('none', { facts, allocator }).capabilities().available).toBe(true);
  });
});
