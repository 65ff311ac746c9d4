import { closeSync, existsSync, openSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AddonError, addonUnavailable, cpuid, cpuVendor, heStatus, loadAddon as loadAddonExports, MappedRegion, readMsr, kvmUnavailable, EnclaveVmError } from './addon.js';
import { loadPayload, EnclaveVm } from './enclave-vm.js';
import { pathMissing, skipUnless } from '../../test/helpers/require.js';

// The syscall bridge: everything here runs wherever the addon is built.
const noAddon = skipUnless('addon tests', [['addon', addonUnavailable()]]);

describe.skipIf(!!noAddon)('addon syscall bridge', () => {
  it('CPUID leaf 0 vendor matches /proc/cpuinfo', () => {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('vendor_id'));
    expect(line).toBeDefined();
    const vendor = line!.split(':')[1]!.trim();
    expect(cpuVendor()).toBe(vendor);
    const r = cpuid(0);
    const b = Buffer.alloc(12);
    b.writeUInt32LE(r.ebx >>> 0, 0);
    b.writeUInt32LE(r.edx >>> 0, 4);
    b.writeUInt32LE(r.ecx >>> 0, 8);
    expect(b.toString('latin1')).toBe(vendor);
    expect(r.eax).toBeGreaterThanOrEqual(1);
  });

  it.skipIf(!!skipUnless('CPUID against /dev/cpu/0/cpuid', [['cpuid-device', pathMissing('/dev/cpu/0/cpuid', 'modprobe cpuid')]]))('CPUID agrees with the kernel cpuid driver (/dev/cpu/0/cpuid)', async () => {
    const { readSync } = await import('node:fs');
    const fd = openSync('/dev/cpu/0/cpuid', 'r');
    try {
      // the driver reads leaf (low 32 bits of the offset) / subleaf (high 32) on CPU 0; we may run
      // on another CPU, so compare leaves that are the same on every CPU
      for (const [leaf, sub] of [[0, 0], [0x8000_0000, 0], [7, 0]] as const) {
        const b = Buffer.alloc(16);
        readSync(fd, b, 0, 16, leaf + sub * 2 ** 32);
        expect(cpuid(leaf, sub)).toEqual({ eax: b.readUInt32LE(0), ebx: b.readUInt32LE(4), ecx: b.readUInt32LE(8), edx: b.readUInt32LE(12) });
      }
    } finally {
      closeSync(fd);
    }
  });

  it('CPUID leaf 1 feature bits agree with /proc/cpuinfo flags', () => {
    const flags = new Set(
      readFileSync('/proc/cpuinfo', 'utf8')
        .split('\n')
        .find((l) => l.startsWith('flags'))!
        .split(':')[1]!
        .trim()
        .split(/\s+/),
    );
    const ecx = cpuid(1).ecx;
    expect(((ecx >>> 23) & 1) === 1).toBe(flags.has('popcnt'));
    expect(((ecx >>> 30) & 1) === 1).toBe(flags.has('rdrand'));
    const edx = cpuid(0x8000_0001).edx;
    expect(((edx >>> 29) & 1) === 1).toBe(flags.has('lm'));
  });

  it('reads an MSR through /dev/cpu/0/msr, or says why not', () => {
    const path = '/dev/cpu/0/msr';
    let usable = existsSync(path);
    if (usable) {
      try {
        closeSync(openSync(path, 'r'));
      } catch {
        usable = false;
      }
    }
    if (!usable) {
      skipUnless('MSR read through /dev/cpu/0/msr (the refusal is checked instead)', [['msr-device', `${path} absent or not permitted (modprobe msr, run as root)`]]);
      const e = (() => {
        try {
          readMsr(0x10);
        } catch (x) {
          return x;
        }
      })();
      expect(e).toBeInstanceOf(AddonError);
      expect((e as AddonError).message).toMatch(/MSR 0x10 on CPU 0: \/dev\/cpu\/0\/msr (is absent|not permitted)/);
      return;
    }
    const a = readMsr(0x10); // IA32_TIME_STAMP_COUNTER
    const b = readMsr(0x10);
    expect(b).toBeGreaterThan(a);
  });

  it('/dev/hyperenclave calls are typed: no request number or pointer from JS, errno as code', () => {
    expect(() => heStatus(-1)).toThrow(/HE_IOC_STATUS: Bad file descriptor \(EBADF\)/);
    const fd = openSync('/dev/null', 'r');
    try {
      // HE_IOC_STATUS on a file that is not the driver
      const err = (() => {
        try {
          heStatus(fd);
        } catch (e) {
          return e as AddonError;
        }
      })();
      expect(err?.code).toBe('ENOTTY');
    } finally {
      closeSync(fd);
    }
    expect(loadAddonExports()).not.toHaveProperty('ioctl');
  });

  it('mmap: anonymous and file mappings, bounds-checked', () => {
    const m = MappedRegion.anonymous(8192);
    m.write(8190, Buffer.from([1, 2]));
    expect([...m.read(8190, 2)]).toEqual([1, 2]);
    expect(() => m.write(8191, Buffer.from([1, 2]))).toThrow(/outside the 0x2000-byte mapping/);
    m.close();
    expect(() => m.read(0, 1)).toThrow(/closed/);

    const dir = mkdtempSync(join(tmpdir(), 'he-mmap-'));
    try {
      const f = join(dir, 'data');
      writeFileSync(f, Buffer.alloc(4096, 0x5a));
      const fd = openSync(f, 'r+');
      const fm = MappedRegion.open(fd, 4096, 0, true);
      expect(fm.read(100, 3).toString('hex')).toBe('5a5a5a');
      fm.write(0, Buffer.from('hello'));
      fm.close();
      closeSync(fd);
      expect(readFileSync(f).subarray(0, 5).toString()).toBe('hello');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------- enclave VMs without the core

const noPayloads = (() => {
  try {
    loadPayload('crypto');
    return null;
  } catch (e) {
    return (e as Error).message;
  }
})();
const skipVm = skipUnless('enclave VM tests', [['addon', noAddon], ['kvm', !noAddon && kvmUnavailable()], ['enclave-payloads', !noAddon && noPayloads]]) ?? null;

const ECALL = { ECHO: 0, ADD: 1, SHA256: 2, VIA_HOST: 3, EMPTY: 4 } as const;

describe.skipIf(skipVm !== null)('KVM enclave runner (standalone payloads)', async () => {
  const { createHash, randomBytes } = await import('node:crypto');

  it('runs the crypto payload: echo, add, SHA-256 checked against node:crypto, OCALL round trip', () => {
    const vm = EnclaveVm.standalone(loadPayload('crypto'));
    try {
      const msg = randomBytes(300);
      expect(vm.call(ECALL.ECHO, msg).equals(msg)).toBe(true);
      const add = Buffer.alloc(16);
      add.writeBigUInt64LE(0xffff_ffff_ffff_fff0n, 0);
      add.writeBigUInt64LE(0x20n, 8);
      expect(vm.call(ECALL.ADD, add).readBigUInt64LE(0)).toBe(0x10n);
      for (const n of [0, 3, 55, 56, 64, 119, 200]) {
        const data = randomBytes(n);
        expect(vm.call(ECALL.SHA256, data).toString('hex')).toBe(createHash('sha256').update(data).digest('hex'));
      }
      const seen: number[] = [];
      const out = vm.call(ECALL.VIA_HOST, Buffer.from('abc'), { ocall: (nr, input) => (seen.push(nr), Buffer.concat([input, Buffer.from('!')])) });
      expect(seen).toEqual([7]);
      expect(out.toString()).toBe('!cba');
      // enclave-reported errors are statuses, not deaths
      const bad = vm.ecall(ECALL.ADD, Buffer.alloc(3));
      expect(bad).toMatchObject({ ok: false, errorCode: 2 });
      expect(vm.ecall(99)).toMatchObject({ ok: false, errorCode: 1 });
      expect(() => vm.ecall(256)).toThrow(/ECALL number 256 out of range \(0..=255\)/);
      expect(vm.info().dead).toBeNull();
      // an OCALL the host fails is an error code for the enclave, and the host's exception surfaces
      expect(() => vm.ecall(ECALL.VIA_HOST, Buffer.from('x'), { ocall: () => { throw new Error('host said no'); } })).toThrow('host said no');
      expect(vm.ecall(ECALL.VIA_HOST, Buffer.from('x'))).toMatchObject({ ok: false, errorCode: 7 });
      expect(vm.info()).toMatchObject({ dead: null, name: 'crypto' });
      expect(() => vm.ecall(ECALL.ECHO, Buffer.alloc(vm.info().sharedCapacity + 1))).toThrow(/exceeds the shared buffer/);
    } finally {
      vm.destroy();
    }
    expect(() => vm.ecall(ECALL.EMPTY)).toThrow(/already destroyed/);
  });

  it('a faulting or runaway enclave ends with a clear error while another keeps answering', () => {
    const good = EnclaveVm.standalone(loadPayload('crypto'));
    const bad = loadPayload('misbehave');
    const cases: [number, RegExp][] = [
      [1, /#PF page fault \(vector 14\) at rip 0x[0-9a-f]+ \(offset 0x[0-9a-f]+\), write of 0x0: page not present/],
      [3, /#UD invalid opcode \(vector 6\)/],
      [4, /#PF page fault .*write of 0x4000[0-9a-f]+: permission denied/],
      [5, /enclave executed HLT \(unexpected exit\)/],
      [6, /#DE divide error \(vector 0\)/],
      [7, /enclave panicked: deliberate panic with 0 input bytes at misbehave\/src\/main.rs:\d+/],
      [8, /read of 0x1000: page not present/],
      [9, /enclave misbehave: triple fault \(KVM_EXIT_SHUTDOWN\)/],
      [2, /runaway: ECALL exceeded its budget of 100 ms/],
    ];
    try {
      for (const [fn, msg] of cases) {
        const vm = EnclaveVm.standalone(bad, { timeoutMs: 100 });
        expect(vm.call(0).toString()).toBe('alive');
        const t0 = Date.now();
        const err = (() => {
          try {
            vm.ecall(fn);
          } catch (e) {
            return e as EnclaveVmError;
          }
        })();
        expect(err).toBeInstanceOf(EnclaveVmError);
        expect(err!.dead).toBe(true);
        expect(err!.message).toMatch(msg);
        expect(err!.message).not.toContain('\n');
        expect(Date.now() - t0).toBeLessThan(5000);
        expect(() => vm.ecall(0)).toThrow(/is dead: enclave misbehave: /);
        expect(vm.info().dead).toMatch(msg);
        vm.destroy();
        // the other enclave (and this process) carry on
        expect(good.call(ECALL.ECHO, Buffer.from('still here')).toString()).toBe('still here');
      }
    } finally {
      good.destroy();
    }
  });

  it('an ECALL from inside the same enclave\'s OCALL handler is refused, not deadlocked', () => {
    const vm = EnclaveVm.standalone(loadPayload('crypto'));
    try {
      let inner: unknown;
      const r = vm.ecall(ECALL.VIA_HOST, Buffer.from('x'), {
        ocall: () => {
          try {
            vm.ecall(ECALL.EMPTY);
          } catch (e) {
            inner = e;
          }
          return Buffer.from('y');
        },
      });
      expect(r.output.toString()).toBe('y');
      expect((inner as Error).message).toMatch(/TCS at offset 0x0 is busy \(TCS_BUSY\): an ECALL is in progress on it/);
    } finally {
      vm.destroy();
    }
  });

  it('destroy releases the KVM objects (no VM or vCPU descriptors left behind)', async () => {
    const { readdirSync, readlinkSync } = await import('node:fs');
    const kvmFds = () =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return /anon_inode:kvm-(vm|vcpu)/.test(readlinkSync(`/proc/self/fd/${fd}`));
        } catch {
          return false;
        }
      }).length;
    const before = kvmFds();
    const vms = [0, 1, 2].map(() => EnclaveVm.standalone(loadPayload('crypto')));
    for (const vm of vms) vm.call(ECALL.EMPTY);
    expect(kvmFds()).toBe(before + 6);
    for (const vm of vms) vm.destroy();
    expect(kvmFds()).toBe(before);
    // a dead VM has already given its descriptors back
    const bad = EnclaveVm.standalone(loadPayload('misbehave'));
    expect(kvmFds()).toBe(before + 2);
    expect(() => bad.ecall(1)).toThrow(EnclaveVmError);
    expect(kvmFds()).toBe(before);
    bad.destroy();
  });

  it('refuses an image larger than its declared ELRANGE', () => {
    const p = loadPayload('crypto');
    expect(() => EnclaveVm.standalone({ layout: { ...p.layout, size: 0x2000 }, image: p.image })).toThrow(/does not fit the declared size 0x2000/);
  });
});
