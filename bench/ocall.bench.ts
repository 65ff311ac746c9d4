// OCALL round trip (enclave → host → enclave with the same payload) through the generated EDL
// stubs on both sides, against the raw C floor of one KVM I/O exit with the host copying the
// same bytes out of guest memory and back (bench/kvm_floor.c `copy`). Both in-process.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, speedup, type BenchRow } from './harness.js';
import { kvmUnavailable } from '../src/hypervisor/addon.js';
import { EnclaveVm, loadPayload } from '../src/hypervisor/enclave-vm.js';
import { KvstoreEnclave, type KvstoreOcalls } from '../src/kv/kvstore.gen.js';

const BYTES = 64;

function floorSource(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const c of [join(here, 'kvm_floor.c'), join(here, '..', '..', 'bench', 'kvm_floor.c')]) if (existsSync(c)) return c;
  throw new Error('bench/kvm_floor.c not found');
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

export default async function bench(): Promise<BenchRow[]> {
  const why = kvmUnavailable();
  if (why) throw new Error(`OCALL bench needs KVM: ${why}`);
  if (!hasCommand('cc')) throw new Error('OCALL bench needs a C compiler (cc) for bench/kvm_floor.c');
  const dir = mkdtempSync(join(tmpdir(), 'he-ocall-floor-'));
  try {
    const bin = join(dir, 'kvm_floor');
    execFileSync('cc', ['-O2', '-o', bin, floorSource()]);
    const vm = EnclaveVm.standalone(loadPayload('kvstore'));
    try {
      let served = 0;
      const ocalls = {
        echo: (d: Buffer) => {
          served++;
          return d;
        },
      } as unknown as KvstoreOcalls;
      const kv = new KvstoreEnclave(async (fn, input, ocalls) => {
        const r = vm.ecall(fn, input, { ocalls });
        return { status: r.status >>> 0, output: r.output };
      }, ocalls);
      const data = Buffer.alloc(BYTES, 0x5a);
      const ROUNDS = 200;
      /** µs per OCALL: an ECALL doing ROUNDS echo OCALLs minus the same ECALL doing none. */
      const oursOnce = async (): Promise<number> => {
        let t0 = process.hrtime.bigint();
        if ((await kv.echoRounds(ROUNDS, data)) !== ROUNDS) throw new Error('OCALL echo: an answer differed');
        const withOcalls = Number(process.hrtime.bigint() - t0) / 1e3;
        t0 = process.hrtime.bigint();
        await kv.echoRounds(0, data);
        const without = Number(process.hrtime.bigint() - t0) / 1e3;
        return (withOcalls - without) / ROUNDS;
      };
      const floorOnce = () => Number(execFileSync(bin, ['copy', '3000', String(BYTES)], { encoding: 'utf8' }).trim());
      await oursOnce();
      const o: number[] = [];
      const f: number[] = [];
      for (let r = 0; r < 9; r++) {
        f.push(floorOnce());
        o.push(await oursOnce());
      }
      const ours = median(o);
      const floor = median(f);
      // Where the time goes: the same round trip without the stubs (the crypto payload's ECALL 3:
      // rt::ocall of the input to OCALL 7, answer reversed) minus its plain echo ECALL (0).
      const crypto = EnclaveVm.standalone(loadPayload('crypto'));
      const per = (n: number, f: () => void) => {
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < n; i++) f();
        return Number(process.hrtime.bigint() - t0) / 1e3 / n;
      };
      const raw: number[] = [];
      const empty: number[] = [];
      try {
        for (let r = 0; r < 5; r++) {
          const viaHost = per(50, () => crypto.ecall(3, data, { ocalls: { 7: (x: Buffer) => x } }));
          const echo = per(50, () => crypto.ecall(0, data));
          raw.push(viaHost - echo);
          empty.push(per(200, () => crypto.ecall(4)));
        }
      } finally {
        crypto.destroy();
      }
      if (served !== ROUNDS * 10) throw new Error(`OCALL echo: ${served} OCALLs served, expected ${ROUNDS * 10}`);
      return [
        {
          name: `OCALL round trip, ${BYTES} B each way (enclave → host → enclave, generated EDL stubs both sides)`,
          ours: { label: 'kvstore enclave echo OCALL, addon runner (JS)', value: ours, unit: 'µs', scope: 'in-process' },
          anchor: { label: `C: KVM_RUN loop on \`out\` + ${BYTES} B copied out and back`, value: floor, unit: 'µs', scope: 'in-process' },
          ratio: speedup(ours, floor, false),
          higherIsBetter: false,
          note:
            `ours: the enclave encodes, rt copies out, the host decodes/dispatches/encodes in JS, rt copies in, the enclave decodes and compares. ` +
            `Same run: one OCALL without the stubs (crypto payload, rt::ocall + JS table) ${median(raw).toFixed(0)} µs, an empty ECALL ${median(empty).toFixed(1)} µs: ` +
            'kvm_pvm interprets guest code, and rt copies with `rep movsb`, interpreted byte by byte. The emulated platform adds a service↔client hop (Unix socket + worker) not in this row',
        },
      ];
    } finally {
      vm.destroy();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
