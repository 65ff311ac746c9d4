import { describe, expect, it } from 'vitest';
import { addonUnavailable, kvmUnavailable } from '../hypervisor/addon.js';
import { EnclaveVm, loadPayload } from '../hypervisor/enclave-vm.js';
import { skipUnless } from '../../test/helpers/require.js';
import { statusError } from '../edl/runtime.js';
import { KVSTORE_ECALL, KVSTORE_ERRORS, KvstoreEnclave, type KvstoreOcalls } from './kvstore.gen.js';

/**
 * The generated stubs on both sides against the real kvstore enclave on KVM (standalone: no
 * core, so no EGETKEY; every case here is refused before a key would be needed, or needs none).
 * Encodings are written by hand (docs/edl.md), not by the encoder under test.
 */

const noAddon = addonUnavailable();
const noPayload = (() => {
  try {
    loadPayload('kvstore');
    return null;
  } catch (e) {
    return (e as Error).message;
  }
})();
const skip = skipUnless('kvstore stub tests', [['addon', noAddon], ['kvm', !noAddon && kvmUnavailable()], ['enclave-payloads', !noAddon && noPayload]]) ?? null;

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const str = (s: Buffer) => Buffer.concat([u32(s.length), s]);
const ECALL_IN = (kind: number, field: number) => (0x8000_0000 | (0x40 << 24) | (kind << 16) | field) >>> 0;
const ANSWER = (kind: number, ocall: number, field: number) => (0x8000_0000 | (0x41 << 24) | (kind << 16) | (ocall << 8) | field) >>> 0;
const OCALL_FAILED = 0x8000_0007;
const TOO_BIG = 0x8000_0003;
const ECHO = 4;

describe.skipIf(skip !== null)('kvstore enclave stubs (KVM, standalone)', () => {
  const withVm = <T>(f: (vm: EnclaveVm) => T): T => {
    const vm = EnclaveVm.standalone(loadPayload('kvstore'));
    try {
      return f(vm);
    } finally {
      vm.destroy();
    }
  };

  it('refuses malformed ECALL input by kind and field, before using it', () => {
    withVm((vm) => {
      const put = (input: Buffer) => vm.ecall(KVSTORE_ECALL.put, input).status >>> 0;
      expect(put(Buffer.alloc(0))).toBe(ECALL_IN(1, 0)); // key: truncated
      expect(put(Buffer.concat([u32(65), Buffer.alloc(65, 0x61)]))).toBe(ECALL_IN(2, 0)); // key over 64
      expect(put(Buffer.concat([u32(0xffff_ffff)]))).toBe(ECALL_IN(2, 0)); // a huge length, never used
      expect(put(Buffer.concat([u32(10), Buffer.from('short')]))).toBe(ECALL_IN(1, 0)); // length past the end
      expect(put(str(Buffer.from([0xc3, 0x28])))).toBe(ECALL_IN(4, 0)); // key not UTF-8
      expect(put(Buffer.concat([str(Buffer.from('k')), u32(3073), Buffer.alloc(3073)]))).toBe(ECALL_IN(2, 1)); // value over 3072
      expect(put(Buffer.concat([str(Buffer.from('k')), str(Buffer.from('v')), Buffer.from([0])]))).toBe(ECALL_IN(5, 254)); // trailing byte
      const echo = (input: Buffer) => vm.ecall(KVSTORE_ECALL.echo_rounds, input).status >>> 0;
      expect(echo(Buffer.from([1, 0, 0]))).toBe(ECALL_IN(1, 0)); // rounds: 3 of 4 bytes
      expect(vm.ecall(0xee).status >>> 0).toBe(0x8000_0001); // no such ECALL: rt's UNKNOWN_ECALL
    });
  });

  it('checks the host\'s OCALL answers: bound, truncation, trailing bytes, oversize; counts each OCALL once', () => {
    withVm((vm) => {
      const data = Buffer.from('0123456789abcdef');
      const run = (answer: (input: Buffer) => Buffer, rounds = 1) => {
        const seen: Buffer[] = [];
        const r = vm.ecall(KVSTORE_ECALL.echo_rounds, Buffer.concat([u32(rounds), str(data)]), {
          ocall: (nr, input) => {
            expect(nr).toBe(ECHO);
            seen.push(Buffer.from(input));
            return answer(input);
          },
        });
        return { status: r.status >>> 0, out: r.output, seen };
      };
      // The honest host: the enclave's input is data (length-prefixed), returned as is.
      const ok = run((input) => input, 3);
      expect(ok.status).toBe(4);
      expect(ok.out).toEqual(u32(3));
      expect(ok.seen).toEqual([str(data), str(data), str(data)]);
      // A valid but different answer: counted as not identical.
      expect(run(() => str(Buffer.from('other'))).out).toEqual(u32(0));
      expect(run(() => Buffer.from([1, 0])).status).toBe(ANSWER(1, ECHO, 255)); // truncated length
      expect(run(() => Buffer.concat([u32(1025), Buffer.alloc(1025)])).status).toBe(TOO_BIG); // larger than the enclave's answer buffer (rt)
      expect(run(() => Buffer.concat([u32(1000), Buffer.alloc(10)])).status).toBe(ANSWER(1, ECHO, 255)); // claims more than sent
      expect(run(() => Buffer.concat([u32(1024 + 4), Buffer.alloc(0)])).status).toBe(ANSWER(2, ECHO, 255)); // over the bound
      expect(run(() => Buffer.concat([str(data), Buffer.from([9])])).status).toBe(ANSWER(5, ECHO, 254)); // trailing byte
      expect(run(() => Buffer.alloc(5000)).status).toBe(TOO_BIG); // more than the enclave's answer buffer
      expect(run(() => Buffer.alloc(20000)).status).toBe(OCALL_FAILED); // more than the shared buffer (16 KiB): the runner refuses
      const e = statusError(ANSWER(5, ECHO, 254), 'ECALL echo_rounds', KVSTORE_ERRORS, ['rounds', 'data'], { [ECHO]: { name: 'echo', fields: ['data'] } });
      expect(e.message).toBe('ECALL echo_rounds: the enclave refused the host\'s answer to OCALL echo: trailing bytes after the last field');
    });
  });

  it('the TypeScript stubs: typed calls, OCALL dispatch by index, host-side bounds', async () => {
    const vm = EnclaveVm.standalone(loadPayload('kvstore'));
    try {
      let answer: (d: Buffer) => Uint8Array = (d) => d;
      const ocalls = { echo: (d: Buffer) => answer(d) } as unknown as KvstoreOcalls;
      const kv = new KvstoreEnclave(async (fn, input, ocalls) => {
        const r = vm.ecall(fn, input, { ocalls });
        return { status: r.status >>> 0, output: r.output };
      }, ocalls);
      expect(await kv.echoRounds(5, Buffer.alloc(1024, 7))).toBe(5);
      await expect(kv.echoRounds(1, Buffer.alloc(1025))).rejects.toThrowError('ECALL echo_rounds parameter "data": 1025 bytes, more than its bound 1024');
      // A handler answering more than the interface allows is stopped on the host side.
      answer = () => Buffer.alloc(2000);
      await expect(kv.echoRounds(1, Buffer.from('x'))).rejects.toThrowError('OCALL echo result: 2000 bytes, more than its bound 1024');
      // An OCALL index the interface does not have.
      expect(() => kv.dispatch(99, Buffer.alloc(0))).toThrowError('OCALL 99: no such entry in kvstore.edl');
      expect(() => kv.dispatch(ECHO, Buffer.from([1]))).toThrowError('OCALL echo field "data": truncated');
    } finally {
      vm.destroy();
    }
  });
});
