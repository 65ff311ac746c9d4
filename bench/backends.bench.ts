// Memory-encryption backends: bytes/s encrypting 64 MiB of enclave memory per backend, next to
// `openssl speed -evp` for the same cipher on this machine; and a 64 MiB SEV launch end to end.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EmulatedKeySlotAllocator } from '../src/enclave/backends/keyslots.js';
import { createBackend, emulatedSlotRanges } from '../src/enclave/backends/backends.js';
import { emulatedPlatformFacts } from '../src/enclave/backends/detect.js';
import { SevGuestOwner } from '../src/enclave/backends/guest-owner.js';
import { SEV_SUITE } from '../src/enclave/backends/sev-firmware.js';
import type { BackendKind } from '../src/enclave/backends/types.js';
import { hasCommand, medianMs, speedup, type BenchRow } from './harness.js';

const SIZE = 64 * 1024 * 1024;
const MB = 1e6;

/** `openssl speed -evp <alg> -bytes 4096 -seconds 2`: bytes/s (OpenSSL prints 1000s of bytes per second). */
function opensslSpeed(alg: string): number {
  const r = spawnSync('openssl', ['speed', '-evp', alg, '-bytes', '4096', '-seconds', '2'], { encoding: 'utf8', timeout: 60_000 });
  const m = new RegExp(`^${alg.replace(/-/g, '[-_]?')}\\s+([0-9.]+)k`, 'im').exec(r.stdout ?? '');
  if (r.status !== 0 || !m) throw new Error(`openssl speed -evp ${alg} gave no rate (exit ${r.status}): ${(r.stderr ?? '').split('\n')[0]}`);
  return Number(m[1]) * 1000;
}

function ctx() {
  return { facts: emulatedPlatformFacts(), allocator: new EmulatedKeySlotAllocator(emulatedSlotRanges()) };
}

export default async function bench(): Promise<BenchRow[]> {
  if (!hasCommand('openssl')) throw new Error('openssl not installed: no anchor');
  const data = randomBytes(SIZE);
  const rows: BenchRow[] = [];
  const anchors: Record<string, { alg: string; rate: number }> = {};
  const anchor = (alg: string): { alg: string; rate: number } => (anchors[alg] ??= { alg, rate: opensslSpeed(alg) });

  const cases: { kind: BackendKind; alg: string; note: string }[] = [
    { kind: 'sev', alg: 'aes-128-xts', note: 'guest write of 64 MiB through the SEV model: AES-128-XTS per 4 KiB page (node createCipheriv per page) + DRAM copy' },
    { kind: 'mktme', alg: 'aes-128-xts', note: 'guest write through a KeyID: AES-128-XTS per page + per-page DRAM map' },
    { kind: 'csv', alg: 'sm4-ecb', note: 'SM4-XTS built on node sm4-ecb (no sm4-xts in OpenSSL 3.0): anchor is the raw sm4-ecb rate, an upper bound for any SM4 mode' },
  ];
  for (const c of cases) {
    const backend = createBackend(c.kind, ctx());
    const guest = backend.launchStart({ memorySize: SIZE, policy: 0 });
    const ms = await medianMs(3, () => guest.guestWrite(0, data));
    const ours = SIZE / (ms / 1000);
    const a = anchor(c.alg);
    rows.push({
      name: `${c.kind}: encrypt 64 MiB enclave memory`,
      ours: { label: `${c.kind} backend`, value: ours / MB, unit: 'MB/s' },
      anchor: { label: `openssl speed -evp ${a.alg} (4 KiB)`, value: a.rate / MB, unit: 'MB/s' },
      ratio: speedup(ours, a.rate, true),
      higherIsBetter: true,
      note: c.note,
    });
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
  const sha = anchor('sha256').rate;
  const xts = anchor('aes-128-xts').rate;
  const anchorMs = (SIZE / sha + SIZE / xts) * 1000;
  rows.push({
    name: 'sev: launch a 64 MiB enclave end to end',
    ours: { label: 'start+update+measure+finish', value: launchMs, unit: 'ms' },
    anchor: { label: 'openssl sha256 + aes-128-xts over 64 MiB (from openssl speed rates)', value: anchorMs, unit: 'ms' },
    ratio: speedup(launchMs, anchorMs, false),
    higherIsBetter: false,
    note: 'the anchor is the pure cipher+hash time OpenSSL needs for the same bytes; ours adds the PSP model, page copies and allocation',
  });
  return rows;
}
