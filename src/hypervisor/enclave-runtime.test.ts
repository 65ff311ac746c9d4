import { describe, expect, it } from 'vitest';
import { addonUnavailable, EnclaveVmError, kvmUnavailable } from './addon.js';
import { buildSigstruct, CoreHypervisor, newSigstructSigner } from './core-hypervisor.js';
import { EnclaveVm, loadPayload, payloadPage, type EnclavePayload } from './enclave-vm.js';
import { HC, statusName } from './abi.js';
import { computeMrEnclave } from '../enclave/sgx.js';
import { skipUnless } from '../../test/helpers/require.js';

/**
 * Issue 14 on the KVM runner with the `probe` payload (hypervisor/enclaves/probe, 4 TCSs, 64 heap
 * pages): exceptions handled inside the enclave and resumed, EDMM, several threads inside at
 * once, OCALL tables and oversize buffers. Real KVM (/dev/kvm), no mocks: every expected value is
 * something the enclave could only produce if the feature worked (a register its handler set, a
 * value written through a page it accepted on the fault, a barrier only two live threads pass).
 */

const noAddon = addonUnavailable();
const noProbe = (() => {
  if (noAddon) return null;
  try {
    loadPayload('probe');
    return null;
  } catch (e) {
    return (e as Error).message;
  }
})();
const skip = skipUnless('enclave runtime tests', [['addon', noAddon], ['kvm', !noAddon && kvmUnavailable()], ['enclave-payloads', noProbe]]) ?? null;

const P = {
  THREAD: 0,
  UD: 1,
  DE: 2,
  PENDING: 3,
  HEAP: 4,
  ABORTED: 5,
  FORGE: 6,
  NESTED: 7,
  BARRIER: 8,
  BARRIER_RESET: 9,
  EDMM_PREP: 10,
  AFTER_RESTRICT: 11,
  AFTER_TRIM: 12,
  EMODPE: 13,
  OCALLS: 14,
  OUTPUT_SIZE: 15,
} as const;

const words = (b: Buffer): bigint[] => Array.from({ length: b.length / 8 }, (_, i) => b.readBigUInt64LE(i * 8));
const u64 = (...v: (number | bigint)[]): Buffer => {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigUInt64LE(BigInt(x), i * 8));
  return b;
};
const thrown = (f: () => unknown): EnclaveVmError => {
  try {
    f();
  } catch (e) {
    return e as EnclaveVmError;
  }
  throw new Error('expected a throw');
};

describe.skipIf(skip !== null)('enclave runtime on KVM (probe payload)', () => {
  const probe = (): EnclavePayload => loadPayload('probe');

  it('the layout has four TCSs and a heap reserve; each TCS runs as its own thread', () => {
    const p = probe();
    expect(p.layout.tcsOffsets).toEqual([0, 0x1000, 0x2000, 0x3000]);
    expect(p.layout.heapPages).toBe(64);
    const vm = EnclaveVm.standalone(p);
    try {
      expect(vm.tcsOffsets()).toEqual([0, 0x1000, 0x2000, 0x3000]);
      for (const [i, tcs] of [0, 0x1000, 0x2000, 0x3000].entries()) expect(words(vm.call(P.THREAD, undefined, { tcsOffset: tcs }))).toEqual([BigInt(i)]);
    } finally {
      vm.destroy();
    }
  });

  it('#UD and #DE are handled by the enclave and the faulting context continues', () => {
    const vm = EnclaveVm.standalone(probe());
    try {
      // ud2 skipped by the handler: the code after it ran (0x600d), handler ran once for vector 6 at CSSA 1
      const ud = vm.ecall(P.UD, undefined, { timeoutMs: 5000 });
      expect(ud.aex).toBe(1);
      expect(words(ud.output)).toEqual([0x600dn, 1n, 6n, 1n]);
      // div by zero: the handler set RAX in the saved frame; the resumed code returns it
      expect(words(vm.call(P.DE, undefined, { timeoutMs: 5000 }))).toEqual([0xdeden, 1n, 0n]);
      // the thread is fine afterwards, and CSSA went back to 0 (a second fault is delivered again)
      expect(words(vm.call(P.UD, undefined, { timeoutMs: 5000 }))).toEqual([0x600dn, 1n, 6n, 1n]);
      expect(vm.info().dead).toBeNull();
    } finally {
      vm.destroy();
    }
  });

  it('an unhandled fault, a fault inside the handler and a forged SSA end only that thread', () => {
    const vm = EnclaveVm.standalone(probe(), { timeoutMs: 5000 });
    try {
      const abort = thrown(() => vm.ecall(P.ABORTED, undefined, { tcsOffset: 0 }));
      expect(abort.code).toBe('ERR_ENCLAVE_DEAD');
      expect(abort.message).toMatch(/exception handler aborted the thread \(enclave fault: #PF page fault \(vector 14\) at rip 0x4000[0-9a-f]+ \(offset 0x[0-9a-f]+\), write of 0x0: page not present\) \[TCS 0x0\]/);
      expect(thrown(() => vm.ecall(P.THREAD, undefined, { tcsOffset: 0 })).message).toMatch(/TCS 0x0 is dead/);

      const nested = thrown(() => vm.ecall(P.NESTED, undefined, { tcsOffset: 0x1000 }));
      expect(nested.message).toMatch(/#UD invalid opcode \(vector 6\).*no free SSA frame \(CSSA = NSSA = 1\): not delivered \[TCS 0x1000\]/);

      const forged = thrown(() => vm.ecall(P.FORGE, undefined, { tcsOffset: 0x2000 }));
      expect(forged.code).toBe('ERR_SSA_INVALID');
      expect(forged.message).toMatch(/SSA_INVALID: ERESUME: SSA frame RIP \(outside ELRANGE\) invalid \(0x1000\) \[TCS 0x2000\]/);

      // the fourth thread still answers; the VM as a whole is not dead
      expect(words(vm.call(P.THREAD, undefined, { tcsOffset: 0x3000 }))).toEqual([3n]);
      expect(vm.info().dead).toBeNull();
    } finally {
      vm.destroy();
    }
  });

  it('a write to a PENDING page faults (#PF via AEX); the handler EACCEPTs it and the write is retried', () => {
    const p = probe();
    const vm = EnclaveVm.standalone(p, { timeoutMs: 5000 });
    try {
      const r = words(vm.call(P.PENDING));
      const page = BigInt(p.layout.base + p.layout.heapOffset! + (p.layout.heapPages! - 1) * 4096);
      // value written, one handled exception, vector 14, MADDR (CR2) = the faulting address, the page
      expect(r).toEqual([0x5a5an, 1n, 14n, page + 8n, page]);
    } finally {
      vm.destroy();
    }
  });

  it('heap_grow: augmented pages come zeroed, are usable, and follow each other in the heap reserve', () => {
    const p = probe();
    const vm = EnclaveVm.standalone(p, { timeoutMs: 20000 });
    try {
      const sum = (n: number) => (3n * BigInt(n * 512) * BigInt(n * 512 - 1)) / 2n;
      expect(words(vm.call(P.HEAP, u64(3)))).toEqual([BigInt(p.layout.heapOffset!), sum(3)]);
      expect(words(vm.call(P.HEAP, u64(2)))).toEqual([BigInt(p.layout.heapOffset! + 3 * 4096), sum(2)]);
      // beyond the reserve: the enclave gets NO_MEMORY (8), no page is taken
      expect(vm.ecall(P.HEAP, u64(60))).toMatchObject({ ok: false, errorCode: 8 });
      // the host may not augment a page twice or outside ELRANGE (PAGE_OVERLAP 15, OUTSIDE_ELRANGE 16)
      expect(thrown(() => vm.edmm('augment', p.layout.heapOffset!, 1)).message).toMatch(/status 15: .*page already exists|status 15/);
      expect(thrown(() => vm.edmm('augment', p.layout.size, 1)).message).toMatch(/status 16/);
    } finally {
      vm.destroy();
    }
  });

  it('restrict, trim and remove: the enclave accepts each change, the new permissions hold at once', () => {
    const p = probe();
    const vm = EnclaveVm.standalone(p, { timeoutMs: 10000 });
    try {
      const [a, b] = words(vm.call(P.EDMM_PREP)).map(Number) as [number, number];
      expect([a, b]).toEqual([p.layout.heapOffset!, p.layout.heapOffset! + 4096]);
      // RW → R: the enclave accepts, reads 0x11, and its write faults (#PF, error code P|W = 3)
      expect(vm.edmm('restrict', a, 1, 1)).toBe(1);
      const r = words(vm.call(P.AFTER_RESTRICT, u64(a)));
      expect(r).toEqual([0n, 0x11n, 1n, 14n, BigInt(p.layout.base + a), 3n]);
      // permissions only shrink; a second restriction before EACCEPT is a state error
      expect(thrown(() => vm.edmm('restrict', b, 1, 7)).message).toMatch(/status 3: .*EMODPR may only remove permissions/);
      // TRIM: inaccessible at once; the enclave accepts, then a read faults (page not present: error code 0)
      expect(vm.edmm('modifyType', b, 1, 4)).toBe(1);
      expect(words(vm.call(P.AFTER_TRIM, u64(b)))).toEqual([0n, 1n, 14n, BigInt(p.layout.base + b)]);
      // EREMOVE: only accepted TRIM pages (PAGE_STATE 42 for the restricted REG page)
      expect(thrown(() => vm.edmm('remove', a, 1)).message).toMatch(/status 42: .*EREMOVE of the page at offset 0x[0-9a-f]+ refused: page is not a trimmed page/);
      expect(thrown(() => vm.edmm('remove', a, 2)).message).toMatch(/status 42/);
      expect(vm.edmm('remove', b, 1)).toBe(1);
      // the offset is free again: augment works, and the new page is PENDING (restrict refused)
      expect(vm.edmm('augment', b, 1)).toBe(1);
      expect(thrown(() => vm.edmm('restrict', b, 1, 1)).message).toMatch(/status 42: .*page is PENDING/);
      expect(vm.info().dead).toBeNull();
    } finally {
      vm.destroy();
    }
  });

  it('EMODPE adds X to a heap page and the enclave runs code there; TCS and bad bits are refused', () => {
    const vm = EnclaveVm.standalone(probe(), { timeoutMs: 10000 });
    try {
      // [EMODPE status, what the new code returned, EMODPE on the TCS (42), EMODPE bit 3 (INVALID_ARGUMENT 3)]
      expect(words(vm.call(P.EMODPE))).toEqual([0n, 0x1234n, 42n, 3n]);
    } finally {
      vm.destroy();
    }
  });

  it('two ECALLs on two TCSs are inside the enclave at the same time (enclave-side barrier)', async () => {
    const vm = EnclaveVm.standalone(probe(), { timeoutMs: 60000 });
    try {
      // control: alone, the barrier gives up after its rounds and says so
      vm.call(P.BARRIER_RESET);
      expect(words((await vm.ecallAsync(P.BARRIER, u64(2000), { tcsOffset: 0x2000 })).output)).toEqual([2n, 0n, 1n]);
      vm.call(P.BARRIER_RESET);
      const rounds = u64(50_000_000); // never reached when the other thread comes in
      const [x, y] = await Promise.all([vm.ecallAsync(P.BARRIER, rounds, { tcsOffset: 0 }), vm.ecallAsync(P.BARRIER, rounds, { tcsOffset: 0x1000 })]);
      expect(words(x.output)).toEqual([0n, 1n, 2n]);
      expect(words(y.output)).toEqual([1n, 1n, 2n]);
      // a second ECALL on a TCS whose first one is parked in an OCALL: refused (TCS_BUSY)
      const seconds: Promise<unknown>[] = [];
      const first = await vm.ecallAsync(P.OCALLS, Buffer.from('q'), {
        tcsOffset: 0,
        ocalls: {
          1: (input) => {
            seconds.push(vm.ecallAsync(P.THREAD, undefined, { tcsOffset: 0 }).then(() => 'ran', (e: Error) => e.message));
            return input;
          },
        },
      });
      expect(first.output.subarray(0, 1).toString()).toBe('q');
      expect(seconds.length).toBe(2); // the OCALLS ECALL calls OCALL 1 twice
      for (const m of await Promise.all(seconds)) expect(m).toMatch(/TCS at offset 0x0 is busy \(TCS_BUSY\)/);
    } finally {
      vm.destroy();
    }
  });

  it('OCALL table: served entries, unknown index → code 7 (logged once), oversize in and out refused', async () => {
    const vm = EnclaveVm.standalone(probe(), { timeoutMs: 10000 });
    const log: string[] = [];
    vm.ocallLog = (l) => log.push(l);
    try {
      const ocalls = { 1: (input: Buffer) => Buffer.from(input).reverse() };
      // [answer bytes] ‖ [unknown index → OCALL (7), 20000-byte input → TOO_BIG (3), answer larger than the enclave's buffer → TOO_BIG (3)]
      const out = vm.call(P.OCALLS, Buffer.from('hello'), { ocalls });
      expect(out.subarray(0, 5).toString()).toBe('olleh');
      expect(words(out.subarray(5))).toEqual([7n, 3n, 3n]);
      const again = await vm.ecallAsync(P.OCALLS, Buffer.from('abc'), { ocalls, tcsOffset: 0x1000 });
      expect(again.output.subarray(0, 3).toString()).toBe('cba');
      expect(log).toEqual(['OCALL 99: no such entry']);
      // an ECALL from inside an OCALL handler: another TCS is fine, the caller's own is TCS_BUSY
      const nested: string[] = [];
      vm.call(P.OCALLS, Buffer.from('n'), {
        ocalls: {
          1: (input) => {
            nested.push(words(vm.call(P.THREAD, undefined, { tcsOffset: 0x2000 })).join(','));
            nested.push(thrown(() => vm.call(P.THREAD, undefined, { tcsOffset: 0 })).message);
            return input;
          },
        },
      });
      expect(nested[0]).toBe('2');
      expect(nested[1]).toMatch(/TCS at offset 0x0 is busy \(TCS_BUSY\)/);
      // output bigger than the shared buffer: the enclave refuses it (TOO_BIG), nothing leaks out
      const cap = vm.info().sharedCapacity;
      expect(vm.ecall(P.OUTPUT_SIZE, u64(cap + 1))).toMatchObject({ ok: false, errorCode: 3, output: Buffer.alloc(0) });
      expect(vm.call(P.OUTPUT_SIZE, u64(cap)).equals(Buffer.alloc(cap, 0xab))).toBe(true);
      // input bigger than the shared buffer: refused before entering
      expect(() => vm.ecall(P.THREAD, Buffer.alloc(cap + 1))).toThrow(/exceeds the shared buffer/);
    } finally {
      vm.destroy();
    }
  });

  it('shared regions larger than one page carry large inputs and outputs', () => {
    const vm = EnclaveVm.standalone(probe(), { sharedPages: 4, timeoutMs: 10000 });
    try {
      expect(vm.info().sharedCapacity).toBe(16384);
      expect(vm.call(P.OUTPUT_SIZE, u64(12000)).equals(Buffer.alloc(12000, 0xab))).toBe(true);
    } finally {
      vm.destroy();
    }
  });
});

/** MRENCLAVE from src/enclave/sgx.ts (TypeScript, independent of the Rust core). */
function mrenclaveOf(p: EnclavePayload): Buffer {
  return computeMrEnclave(
    BigInt(p.layout.size),
    p.layout.ssaFrameSize,
    p.layout.pages.map((pg) => ({ offset: BigInt(pg.offset), flags: pg.secinfo, data: payloadPage(p, pg.offset) })),
  );
}

const EDMM = 1n << 8n;

describe.skipIf(skip !== null)('enclave runtime on KVM over the core (probe payload, measured)', () => {
  const probe = (): EnclavePayload => loadPayload('probe');
  const MB = 1n << 20n;
  const core = () =>
    new CoreHypervisor({ base: 0x1_8000_0000n, total: 16n * MB, hypervisorSize: 4n * MB, imageSize: 1n * MB, paging: 'ept', requireSignedSigstruct: false, imageDigest: Buffer.alloc(32), keySlots: null });
  const signer = newSigstructSigner();
  const load = (hv: CoreHypervisor, p: EnclavePayload, attributes: bigint) =>
    hv.loadPayload(p, buildSigstruct({ enclaveHash: mrenclaveOf(p), attributes, xfrm: 3n, attributeMask: 0xffff_ffff_ffff_fffdn, isvProdId: 1, isvSvn: 1 }, signer), { attributes });

  it('ATTRIBUTES.EDMM opts in: heap_grow through ENCLAVE_AUGMENT, MRENCLAVE unchanged, pages returned at destroy', () => {
    const p = probe();
    const hv = core();
    try {
      const plain = load(hv, p, 4n);
      const pvm = hv.run(plain, { timeoutMs: 10000 });
      // no opt-in: the core refuses ENCLAVE_AUGMENT, the enclave sees its OCALL fail (7)
      expect(pvm.ecall(P.HEAP, u64(1))).toMatchObject({ ok: false, errorCode: 7 });
      pvm.destroy();
      expect(hv.destroy(plain)).toBe(p.layout.pages.length + 1);

      const id = load(hv, p, 4n | EDMM);
      const used = hv.status().epcPagesUsed;
      const vm = hv.run(id, { timeoutMs: 20000 });
      expect(words(vm.call(P.HEAP, u64(2)))[0]).toBe(BigInt(p.layout.heapOffset!));
      expect(hv.status().epcPagesUsed).toBe(used + 2);
      expect(hv.info(id).mrenclave.equals(mrenclaveOf(p))).toBe(true);
      // exceptions are delivered on the core path too
      expect(words(vm.call(P.UD))).toEqual([0x600dn, 1n, 6n, 1n]);
      // host EDMM leaves through the core's hypercall dispatch: the running VM follows them
      const [a, b] = words(vm.call(P.EDMM_PREP)).map(Number) as [number, number];
      expect(hv.hypercall(HC.ENCLAVE_RESTRICT, [BigInt(id), BigInt(a), 1n, 1n], 0n, Buffer.alloc(0)).status).toBe(0);
      expect(words(vm.call(P.AFTER_RESTRICT, u64(a)))).toEqual([0n, 0x11n, 1n, 14n, 0n, 0n]);
      expect(statusName(hv.hypercall(HC.ENCLAVE_REMOVE, [BigInt(id), BigInt(a), 1n], 0n, Buffer.alloc(0)).status)).toBe('PAGE_STATE');
      expect(hv.hypercall(HC.ENCLAVE_MODIFY_TYPE, [BigInt(id), BigInt(b), 1n, 4n], 0n, Buffer.alloc(0)).status).toBe(0);
      expect(words(vm.call(P.AFTER_TRIM, u64(b)))).toEqual([0n, 1n, 14n, 0n]);
      const r = hv.hypercall(HC.ENCLAVE_REMOVE, [BigInt(id), BigInt(b), 1n], 0n, Buffer.alloc(0));
      expect([r.status, r.rdi]).toEqual([0, 1n]);
      expect(hv.status().epcPagesUsed).toBe(used + 3);
      vm.destroy();
      expect(hv.destroy(id)).toBe(p.layout.pages.length + 1 + 3);
    } finally {
      hv.close();
    }
  });

  it('two ECALLs on two TCSs of a core enclave are inside at the same time', async () => {
    const p = probe();
    const hv = core();
    try {
      const id = load(hv, p, 4n);
      const vm = hv.run(id, { timeoutMs: 60000 });
      vm.call(P.BARRIER_RESET);
      const rounds = u64(50_000_000);
      const [x, y] = await Promise.all([vm.ecallAsync(P.BARRIER, rounds, { tcsOffset: 0x1000 }), vm.ecallAsync(P.BARRIER, rounds, { tcsOffset: 0x3000 })]);
      expect(words(x.output)).toEqual([1n, 1n, 2n]);
      expect(words(y.output)).toEqual([3n, 1n, 2n]);
      vm.destroy();
      hv.destroy(id);
    } finally {
      hv.close();
    }
  });
});
