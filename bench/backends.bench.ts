// Memory-encryption backends: a guest writing (encrypt) and reading (decrypt) 64 MiB through each
// backend model, next to one raw OpenSSL cipher object run over the same 64 MiB in this process
// (update per 4 KiB, output kept in a 64 MiB buffer); and a 64 MiB SEV launch end to end.
// `openssl speed` rates are measured too and given in the notes, for the cipher without Node.
import { spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { EmulatedKeySlotAllocator } from '../src/enclave/backends/keyslots.js';
import { emulatedSlotRanges } from '../src/enclave/backends/backends.js';
import { createBackend } from '../src/enclave/backends/registry.js';
import { emulatedPlatformFacts } from '../src/enclave/backends/detect.js';
import { SevGuestOwner } from '../src/enclave/backends/guest-owner.js';
import { SEV_SUITE } from '../src/enclave/backends/sev-firmware.js';
import type { BackendKind } from '../src/enclave/backends/types.js';
import { hasCommand, medianMs, speedup, type BenchRow } from './harness.js';

const SIZE = 64 * 1024 * 1024;
const PAGE = 4096;
const MB = 1e6;

/** `openssl speed -evp <alg> -bytes 4096 -seconds 2`: bytes/s (OpenSSL prints 1000s of bytes per second). */
function opensslSpeed(alg: string): number {
  const r = spawnSync('openssl', ['speed', '-evp', alg, '-bytes', '4096', '-seconds', '2'], { encoding: 'utf8', timeout: 60_000 });
  const m = new RegExp(`^${alg.replace(/-/g, '[-_]?')}\\s+([0-9.]+)k`, 'im').exec(r.stdout ?? '');
  if (r.status !== 0 || !m) throw new Error(`openssl speed -evp ${alg} gave no rate (exit ${r.status}): ${(r.stderr ?? '').split('\n')[0]}`);
  return Number(m[1]) * 1000;
}

/** One cipher object over all of `data`, 4 KiB per update (the same tweak for every unit), into `out`. */
function rawCipher(alg: string, encrypt: boolean, data: Buffer, out: Buffer): void {
  const keyLen = alg.endsWith('-xts') ? 32 : 16;
  const key = randomBytes(keyLen);
  const iv = alg.endsWith('-ecb') ? null : Buffer.alloc(16, 1);
  const c = encrypt ? createCipheriv(alg, key, iv) : createDecipheriv(alg, key, iv);
  if (alg.endsWith('-ecb')) c.setAutoPadding(false);
  for (let off = 0; off < data.length; off += PAGE) out.set(c.update(data.subarray(off, off + PAGE)), off);
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

/** Alternates anchor and ours `rounds` times (after one warm-up each) so machine load hits both alike; medians in ms. */
function interleavedMs(rounds: number, anchorRun: () => void, oursRun: () => void): { ours: number; anchor: number } {
  const time = (fn: () => void): number => {
    const t0 = process.hrtime.bigint();
    fn();
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  anchorRun();
  oursRun();
  const a: number[] = [];
  const o: number[] = [];
  for (let r = 0; r < rounds; r++) {
    a.push(time(anchorRun));
    o.push(time(oursRun));
  }
  return { ours: median(o), anchor: median(a) };
}

function ctx() {
  return { facts: emulatedPlatformFacts(), allocator: new EmulatedKeySlotAllocator(emulatedSlotRanges()) };
}

export default async function bench(): Promise<BenchRow[]> {
  if (!hasCommand('openssl')) throw new Error('openssl not installed: no `openssl speed` reference');
  const data = randomBytes(SIZE);
  const out = Buffer.alloc(SIZE);
  const rows: BenchRow[] = [];
  const speeds: Record<string, number> = {};
  const speed = (alg: string): number => (speeds[alg] ??= opensslSpeed(alg));

  const cases: { kind: BackendKind; alg: string; note: string }[] = [
    { kind: 'sev', alg: 'aes-128-xts', note: 'SEV model: AES-128-XTS, data unit 4 KiB, tweak = GPA (one cipher object per page: Node cannot change an XTS tweak mid-stream)' },
    { kind: 'mktme', alg: 'aes-128-xts', note: 'MKTME model: AES-128-XTS through a KeyID, tweak = host PA, DRAM in 2 MiB slabs' },
    { kind: 'csv', alg: 'sm4-ecb', note: 'CSV model: SM4-XTS over sm4-ecb (OpenSSL 3.0 has no sm4-xts), so the raw anchor is sm4-ecb' },
  ];
  for (const c of cases) {
    const backend = createBackend(c.kind, ctx());
    const guest = backend.launchStart({ memorySize: SIZE, policy: 0 });
    const w = interleavedMs(5, () => rawCipher(c.alg, true, data, out), () => guest.guestWrite(0, data));
    const r = interleavedMs(5, () => rawCipher(c.alg, false, data, out), () => guest.guestRead(0, SIZE));
    if (!guest.guestRead(0, PAGE).equals(data.subarray(0, PAGE))) throw new Error(`${c.kind}: guest read back something else than it wrote`);
    const ref = `openssl speed -evp ${c.alg} (4 KiB): ${(speed(c.alg) / MB).toFixed(0)} MB/s`;
    for (const [op, t] of [['encrypt (guest write)', w], ['decrypt (guest read)', r]] as const) {
      rows.push({
        name: `${c.kind}: ${op} 64 MiB enclave memory`,
        ours: { label: `${c.kind} model`, value: SIZE / MB / (t.ours / 1000), unit: 'MB/s', scope: 'in-process' },
        anchor: { label: `one ${c.alg} cipher object, same bytes`, value: SIZE / MB / (t.anchor / 1000), unit: 'MB/s', scope: 'in-process' },
        ratio: speedup(t.ours, t.anchor, false),
        higherIsBetter: true,
        note: `${c.note}; ${ref}`,
      });
    }
    guest.release();
  }

  // 64 MiB SEV launch: LAUNCH_START + LAUNCH_UPDATE_DATA (SHA-256 + AES-XTS) + LAUNCH_MEASURE + LAUNCH_FINISH.
  const owner = new SevGuestOwner(SEV_SUITE);
  const backend = createBackend('sev', ctx());
  const launchMs = await medianMs(3, () => {
    const g = backend.launchStart({ memorySize: SIZE, session: owner.session() });
    g.updateData(0, data);
    g.measure();
    g.finish();
    g.release();
    backend.flushReleased();
  });
  const anchorMs = (SIZE / speed('sha256') + SIZE / speed('aes-128-xts')) * 1000;
  rows.push({
    name: 'sev: launch a 64 MiB enclave end to end',
    ours: { label: 'start+update+measure+finish', value: launchMs, unit: 'ms', scope: 'in-process' },
    anchor: { label: 'openssl sha256 + aes-128-xts over 64 MiB (from openssl speed rates)', value: anchorMs, unit: 'ms', scope: 'derived' },
    ratio: speedup(launchMs, anchorMs, false),
    higherIsBetter: false,
    note: 'the anchor is the pure cipher+hash time OpenSSL needs for the same bytes; ours adds the PSP model, page copies and allocation',
  });
  return rows;
}
