import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { cpuVendorOverride, kvmFacts, parseCpuinfo, readCpuFacts } from './cpu.js';

const EPYC = `processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu vme sme sev sev_es svm npt hypervisor

processor\t: 1
vendor_id\t: AuthenticAMD
`;

describe('cpu facts', () => {
  it('reads vendor, virtualization flags and CPU count', () => {
    const f = parseCpuinfo(EPYC);
    expect(f).toMatchObject({ vendor: 'AuthenticAMD', cpus: 2, svm: true, vmx: false, nestedPaging: true, underHypervisor: true });
  });

  it('reads this machine', () => {
    const f = readCpuFacts();
    expect(f.cpus).toBeGreaterThan(0);
    expect(['GenuineIntel', 'AuthenticAMD', 'HygonGenuine']).toContain(f.vendor);
    expect(f.kvm.present).toBe(existsSync('/dev/kvm'));
  });

  it('the test-only vendor override takes one of the three known vendors and refuses anything else', () => {
    expect(cpuVendorOverride({})).toBeUndefined();
    expect(cpuVendorOverride({ HYPERENCLAVE_TEST_CPU_VENDOR: 'HygonGenuine' })).toBe('HygonGenuine');
    expect(() => cpuVendorOverride({ HYPERENCLAVE_TEST_CPU_VENDOR: 'CentaurHauls' })).toThrow('HYPERENCLAVE_TEST_CPU_VENDOR: expected one of GenuineIntel, AuthenticAMD, HygonGenuine, got "CentaurHauls"');
  });

  it('explains a missing /dev/kvm', () => {
    expect(kvmFacts('/nonexistent/kvm')).toMatchObject({ present: false, usable: false, reason: expect.stringMatching(/absent/) });
  });
});
