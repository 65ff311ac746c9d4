import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serviceEntry, stopHypervisorService } from '../platform/emulated/hypervisor-service.js';
import { stopEmulatedTpm } from '../platform/emulated/tpm-daemon.js';
import { addonCore } from '../hypervisor/addon-adapter.js';
import { EmulatedHypervisorClient } from '../hypervisor/emulated-client.js';
import { encodeTargetInfo, parseReport, QUOTING_TARGET_MRENCLAVE } from '../hypervisor/abi.js';
import { loadManifest, withBackend } from './manifest.js';
import { createEnclave, runEnclave } from './lifecycle.js';
import { loadPayload, planEnclave } from './layout.js';
import { computeMrEnclave } from './sgx.js';
import { skipUnless } from '../../test/helpers/require.js';

const fixture = (n: string): string => new URL(`../../test/fixtures/enclave/${n}`, import.meta.url).pathname;
const why = skipUnless('enclave lifecycle tests', [
  ['cli', existsSync(serviceEntry()) ? undefined : `${serviceEntry()} missing (npm run build)`],
  ['addon', await addonCore().then(() => undefined, (e: Error) => e.message)],
]);

describe.skipIf(!!why)('enclave lifecycle on the emulated hypervisor', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'he-encl-'));
  let c: EmulatedHypervisorClient;
  const manifest = loadManifest(fixture('selftest.manifest.json'));

  beforeAll(async () => {
    c = await EmulatedHypervisorClient.connect(stateDir, { memoryMap: 'synthetic', epcMiB: 4 });
    const img = join(stateDir, 'hv.bin');
    writeFileSync(img, 'hypervisor image for the lifecycle tests');
    await c.load(img, createHash('sha256').update(readFileSync(img)).digest('hex'));
    await c.enable();
  });
  afterAll(async () => {
    c?.close();
    await stopHypervisorService(stateDir);
    await stopEmulatedTpm(stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('create → init: the core’s MRENCLAVE equals the TypeScript computation; destroy returns the EPC', async () => {
    const { image, layout } = loadPayload(manifest);
    const plan = planEnclave(manifest, image, layout);
    const expected = computeMrEnclave(plan.size, plan.ssaFrameSize, plan.pages);
    const r = await runEnclave(c, manifest);
    expect(r.mrenclave).toBe(expected.toString('hex'));
    expect(r.epcPages).toBe(plan.pages.length + 1);
    expect(r.epcReturned).toBe(r.epcPages);
    expect(r).not.toHaveProperty('report');
    expect(r.launch?.algorithm).toBe('sha256-hypervisor');
    const s = await c.status();
    expect([s.hv!.epcPagesUsed, s.hv!.enclaves]).toEqual([0, 0]);
  });

  for (const kind of ['sev', 'sev-es', 'csv', 'mktme'] as const) {
    it(`${kind}: key slot from the core, launch measurement, enclave view plaintext, host view ciphertext; slot released and flushed`, async () => {
      const m = withBackend(manifest, kind);
      const e = await createEnclave(c, m);
      try {
        const launch = await c.enclaveLaunch(e.id, kind);
        expect(launch.keySlot).toBeGreaterThanOrEqual(1);
        expect(launch.measurement.algorithm).toBe(kind === 'csv' ? 'hmac-sm3' : kind.startsWith('sev') ? 'hmac-sha256' : 'sha256-hypervisor');
        expect(launch.keySlot).toBe(kind === 'sev' ? 6 : 1);
        expect(launch.measurement.measurement.length).toBe(32);
        const during = await c.status();
        expect(during.hv!.keySlotsAllocated).toBe(1);
        expect(during.enclaves.find((x) => x.id === e.id)?.keySlot).toBe(launch.keySlot);
        const plain = Buffer.from(e.plan.pages[1]!.data);
        const enclaveView = await c.enclaveMemory(e.id, 0x1000n, 4096, 'enclave');
        const hostView = await c.enclaveMemory(e.id, 0x1000n, 4096, 'host');
        expect(enclaveView.equals(plain)).toBe(true);
        expect(hostView.equals(plain)).toBe(false);
        expect(hostView.subarray(0, 64).equals(plain.subarray(0, 64))).toBe(false);
      } finally {
        await c.enclaveDestroy(e.id);
      }
      const after = await c.status();
      expect([after.hv!.keySlotsAllocated, after.hv!.keySlotsPendingFlush]).toEqual([0, 0]);
      expect(after.hv!.flushes).toBeGreaterThanOrEqual(1);
    });
  }

  it('SEV ASIDs 6..15 run out with a clear error; a destroyed guest\'s ASID is reused only after the flush', async () => {
    const ids: number[] = [];
    try {
      for (let i = 0; i < 10; i++) {
        const e = await createEnclave(c, manifest);
        ids.push(e.id);
        expect((await c.enclaveLaunch(e.id, 'sev')).keySlot).toBe(6 + i);
      }
      const extra = await createEnclave(c, manifest);
      ids.push(extra.id);
      await expect(c.enclaveLaunch(extra.id, 'sev')).rejects.toThrow(/no free sev key slot in 6\.\.15/);
      expect((await c.status()).hv!.keySlotsPendingFlush).toBe(0);
      await c.enclaveDestroy(ids.shift()!);
      expect((await c.enclaveLaunch(extra.id, 'sev')).keySlot).toBe(6);
    } finally {
      for (const id of ids) await c.enclaveDestroy(id);
    }
    const s = await c.status();
    expect([s.hv!.keySlotsAllocated, s.hv!.keySlotsPendingFlush]).toEqual([0, 0]);
  });

  it('without a backend the host view is the plaintext (nothing hides it but the page tables)', async () => {
    const e = await createEnclave(c, manifest);
    try {
      await c.enclaveLaunch(e.id, 'none');
      const host = await c.enclaveMemory(e.id, 0x1000n, 4096, 'host');
      expect(host.equals(Buffer.from(e.plan.pages[1]!.data))).toBe(true);
    } finally {
      await c.enclaveDestroy(e.id);
    }
  });
});

// ---------------------------------------------------------------- real payloads on KVM

const payloadsBuilt = ['crypto', 'sealer', 'misbehave'].every((p) => existsSync(new URL(`../../hypervisor/enclaves/out/${p}.json`, import.meta.url).pathname));
const kvmWhy = why ?? skipUnless('enclave ECALL tests on KVM', [
  ['enclave-payloads', !payloadsBuilt && 'enclave payloads not built (hypervisor/enclaves/build.sh)'],
  ['kvm', payloadsBuilt && await addonCore().then((m) => {
    const hv = m.createHypervisor({ base: 0x100000000n, total: 3n << 20n, hypervisorSize: 2n << 20n, imageSize: 0n, paging: 'ept', imageDigest: Buffer.alloc(32), keySlots: null, requireSignedSigstruct: true });
    const r = hv.kvmUnavailable();
    hv.close();
    return r ?? undefined;
  })],
]);

describe.skipIf(!!kvmWhy)('enclave payloads built from the repo, run on KVM', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'he-kvm-'));
  let c: EmulatedHypervisorClient;
  const u64s = (a: bigint, b: bigint): Buffer => {
    const x = Buffer.alloc(16);
    x.writeBigUInt64LE(a, 0);
    x.writeBigUInt64LE(b, 8);
    return x;
  };

  beforeAll(async () => {
    c = await EmulatedHypervisorClient.connect(stateDir, { memoryMap: 'synthetic', epcMiB: 8 });
    const img = join(stateDir, 'hv.bin');
    writeFileSync(img, 'hypervisor image for the KVM tests');
    await c.load(img, createHash('sha256').update(readFileSync(img)).digest('hex'));
    await c.enable();
    // the core seals its root over the emulated TPM; EGETKEY/EREPORT need it
    expect((await c.trustInit()).created).toBe(true);
  });
  afterAll(async () => {
    c?.close();
    await stopHypervisorService(stateDir);
    await stopEmulatedTpm(stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  });

  for (const backend of ['none', 'sev', 'csv', 'mktme'] as const) {
    it(`crypto payload (${backend}): ECALLs answer, report verifies, EPC returned`, async () => {
      const m = loadManifest(fixture('crypto.manifest.json'));
      const { image, layout } = loadPayload(m);
      const expected = computeMrEnclave(m.size, m.ssaFrameSize, planEnclave(m, image, layout).pages).toString('hex');
      const r = await runEnclave(c, m, {
        backend,
        ecalls: [
          { fn: 1, input: u64s(40n, 2n) },
          { fn: 2, input: Buffer.from('abc') },
          { fn: 0, input: Buffer.from('echo') },
          { fn: 9 },
        ],
      });
      expect(r.mrenclave).toBe(expected);
      expect(r.backend).toBe(backend);
      expect(r.keySlot === null).toBe(backend === 'none');
      const [add, sha, echo, unknown] = r.ecalls;
      expect(add).toMatchObject({ ok: true, output: u64s(42n, 0n).subarray(0, 8).toString('hex') });
      expect(sha!.output).toBe(createHash('sha256').update('abc').digest('hex'));
      expect(Buffer.from(echo!.output, 'hex').toString()).toBe('echo');
      expect(unknown).toMatchObject({ ok: false, error: 'ECALL 9 returned error code 1' });
      expect(r.epcReturned).toBe(r.epcPages);
      const s = await c.status();
      expect([s.hv!.epcPagesUsed, s.hv!.keySlotsAllocated, s.hv!.keySlotsPendingFlush]).toEqual([0, 0, 0]);
    });
  }

  it('every TCS is usable and ATTRIBUTES.EDMM lets the enclave grow its heap (probe payload)', async () => {
    const m = loadManifest(fixture('probe.manifest.json'));
    expect([m.threads, m.edmm, m.miscSelect]).toEqual([4, true, 1]);
    const plan = planEnclave(m, loadPayload(m).image, loadPayload(m).layout);
    expect(plan.tcs).toEqual([0n, 0x1000n, 0x2000n, 0x3000n]);
    expect(plan.attributes).toBe(4n | (1n << 8n));
    const u64 = (v: number) => Buffer.from(new BigUint64Array([BigInt(v)]).buffer);
    const r = await runEnclave(c, m, { ecalls: [0, 1, 2, 3].map((thread) => ({ fn: 0, thread })).concat([{ fn: 4, thread: 2, input: u64(2) } as never]) });
    expect(r.ecalls.slice(0, 4).map((e) => e.output)).toEqual([0, 1, 2, 3].map((i) => u64(i).toString('hex')));
    // heap_grow(2) on thread 2: ELRANGE offset of the heap reserve, then the checksum of what it wrote
    const heap = Buffer.from(r.ecalls[4]!.output, 'hex');
    expect(heap.readBigUInt64LE(0)).toBe(BigInt(plan.layout.raw.heapOffset as number));
    expect(heap.readBigUInt64LE(8)).toBe((3n * 1024n * 1023n) / 2n);
    expect(r.epcReturned).toBe(plan.pages.length + 1 + 2);
    await expect(runEnclave(c, m, { ecalls: [{ fn: 0, thread: 4 }] })).rejects.toThrow(/thread 4 does not exist \(4 TCSs; raise \/threads\)/);
  });

  it('what the enclave writes while running reaches DRAM encrypted under its key (sev)', async () => {
    const m = loadManifest(fixture('crypto.manifest.json'));
    const e = await createEnclave(c, m);
    try {
      await c.enclaveLaunch(e.id, 'sev');
      const before = await c.enclaveMemory(e.id, 0n, Number(m.size), 'enclave');
      const [r] = await c.enclaveRun(e.id, [{ fn: 2, input: Buffer.from('abc') }]);
      expect(r!.ok).toBe(true);
      const after = await c.enclaveMemory(e.id, 0n, Number(m.size), 'enclave');
      const dram = await c.enclaveMemory(e.id, 0n, Number(m.size), 'host');
      expect(after.equals(before)).toBe(false);
      // Every non-zero 16-byte block the enclave holds is ciphertext in DRAM.
      for (let i = 0; i < after.length; i += 16) {
        const blk = after.subarray(i, i + 16);
        if (blk.some((b) => b !== 0)) expect(dram.subarray(i, i + 16).equals(blk)).toBe(false);
      }
    } finally {
      await c.enclaveDestroy(e.id);
    }
  });

  it('sealer payload: EREPORT inside the enclave verifies in the hypervisor; seal/unseal round trip', async () => {
    const m = loadManifest(fixture('sealer.manifest.json'));
    const data = Buffer.alloc(64, 0x5a);
    const { image, layout } = loadPayload(m);
    const mr = computeMrEnclave(m.size, m.ssaFrameSize, planEnclave(m, image, layout).pages);
    const ti = encodeTargetInfo({ mrenclave: mr });
    const r = await runEnclave(c, m, { ecalls: [{ fn: 2, input: Buffer.concat([data, ti]) }, { fn: 0, input: Buffer.from('secret message') }] });
    const [rep, sealed] = r.ecalls;
    expect(rep!.ok).toBe(true);
    const report = Buffer.from(rep!.output, 'hex');
    const parsed = parseReport(report);
    expect(parsed.mrenclave.toString('hex')).toBe(r.mrenclave);
    expect(parsed.reportData.equals(data)).toBe(true);
    expect(sealed!.ok).toBe(true);
    // Same enclave identity (a new instance) unseals; a tampered blob is refused.
    const again = await createEnclave(c, m);
    try {
      const blob = Buffer.from(sealed!.output, 'hex');
      const bad = Buffer.from(blob);
      bad[bad.length - 1]! ^= 1;
      const [open, refused] = await c.enclaveRun(again.id, [{ fn: 1, input: blob }, { fn: 1, input: bad }]);
      expect(open!.output.toString()).toBe('secret message');
      expect(refused).toMatchObject({ ok: false, error: 'ECALL 1 returned error code 4' });
      // The MAC is keyed for the target named in TARGETINFO (here: the enclave itself).
      expect(await c.verifyReport(report, Buffer.from(r.mrenclave, 'hex'))).toBe(true);
      expect(await c.verifyReport(report, Buffer.alloc(32))).toBe(false);
      const forged = Buffer.from(report);
      forged[320] ^= 1;
      expect(await c.verifyReport(forged, Buffer.from(r.mrenclave, 'hex'))).toBe(false);
    } finally {
      await c.enclaveDestroy(again.id);
    }
  });

  it('a payload that faults ends only its own enclave, with a clear error; the others keep running', async () => {
    const bad = await createEnclave(c, loadManifest(fixture('misbehave.manifest.json')));
    const good = await createEnclave(c, loadManifest(fixture('crypto.manifest.json')));
    try {
      const [alive, fault, after] = await c.enclaveRun(bad.id, [{ fn: 0 }, { fn: 1 }, { fn: 0 }]);
      expect(alive!.output.toString()).toBe('alive');
      expect(fault!.ok).toBe(false);
      expect(fault!.error).toMatch(/fault|page|#PF|exception/i);
      expect(after).toBeUndefined();
      await expect(c.enclaveRun(bad.id, [{ fn: 0 }])).rejects.toThrow(/is dead/);
      const [ping] = await c.enclaveRun(good.id, [{ fn: 1, input: u64s(1n, 1n) }]);
      expect(ping!.ok).toBe(true);
    } finally {
      expect(await c.enclaveDestroy(bad.id)).toBe(bad.epcPages);
      await c.enclaveDestroy(good.id);
    }
    const bad2 = await createEnclave(c, loadManifest(fixture('misbehave.manifest.json')));
    try {
      const [spin] = await c.enclaveRun(bad2.id, [{ fn: 2 }]);
      expect(spin!.ok).toBe(false);
      expect(spin!.error).toMatch(/time|runaway|watchdog/i);
    } finally {
      await c.enclaveDestroy(bad2.id);
    }
    expect((await c.status()).hv!.epcPagesUsed).toBe(0);
  });
});
