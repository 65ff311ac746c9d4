import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileSchema } from '../schemas.js';
import { serviceEntry, stopHypervisorService } from '../platform/emulated/service-process.js';
import { buildContainer } from '../measure/index.js';
import { SECINFO, STATUS_CODE } from './abi.js';
import { addonCore } from './addon-adapter.js';
import { EmulatedHypervisorClient } from './emulated-client.js';
import { statusToJson } from './status.js';
import { skipUnless } from '../../test/helpers/require.js';

/**
 * The emulated hypervisor end to end: the service process with the Rust core behind the ABI.
 * Needs the compiled service entry (npm run build) and the addon's core bindings.
 */
const fx = (n: string): Buffer => readFileSync(new URL(`../../test/fixtures/enclave/${n}`, import.meta.url));
const why = skipUnless('emulated hypervisor core tests', [
  ['cli', existsSync(serviceEntry()) ? undefined : `${serviceEntry()} missing (npm run build)`],
  ['addon', await addonCore().then(() => undefined, (e: Error) => e.message)],
]);
const validStatus = compileSchema('hypervisor-status.schema.json');

const SELFTEST_MRENCLAVE = 'b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0';
const SELFTEST_MRSIGNER = '2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4';

async function createSelftest(c: EmulatedHypervisorClient): Promise<number> {
  const img = fx('encl.bin');
  const id = await c.enclaveCreate({ size: 0x8000n, base: 0n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n }, { name: 'selftest' });
  await c.enclaveAddPages(
    id,
    [...Array(6).keys()].map((i) => ({ offset: BigInt(i * 4096), data: img.subarray(i * 4096, (i + 1) * 4096), flags: i === 0 ? 0x100 : 0x207, measure: true })),
  );
  await c.enclaveInit(id, fx('encl.ss'));
  return id;
}

describe.skipIf(!!why)('emulated hypervisor (service + Rust core)', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'he-core-'));
  let c: EmulatedHypervisorClient;
  const image = join(stateDir, 'hv.bin');
  const imageBytes = randomBytes(64 * 1024);
  writeFileSync(image, imageBytes);
  const sha = createHash('sha256').update(imageBytes).digest('hex');

  beforeAll(async () => {
    c = await EmulatedHypervisorClient.connect(stateDir, { memoryMap: 'synthetic', epcMiB: 1 });
  });
  afterAll(async () => {
    c?.close();
    await stopHypervisorService(stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('loads the image by its measured digest; IMAGE_DIGEST and status report it', async () => {
    await expect(c.load(image, '00'.repeat(32))).rejects.toThrow(/differs from the measured/);
    const img = await c.load(image, sha);
    expect(img).toMatchObject({ sha256: sha, format: 'raw', length: 65536 });
    expect((await c.imageDigest()).toString('hex')).toBe(sha);
    await expect(c.load(image, sha)).rejects.toThrow(/already loaded/);
    const s = await c.status();
    expect(s.loaded).toBe(true);
    expect(s.enabled).toBe(false);
    expect(s.memmap).toBe('memmap=65M$0x1fbe00000');
    expect(s.hv!.epcPagesTotal).toBe(256);
    expect(s.hv!.imageDigest.toString('hex')).toBe(sha);
    expect(validStatus(statusToJson(s))).toBeUndefined();
  });

  it('a measured image container (src/measure) is loaded by its image digest; a tampered one is refused', async () => {
    const dir2 = mkdtempSync(join(tmpdir(), 'he-img-'));
    const c2 = await EmulatedHypervisorClient.connect(dir2, { memoryMap: 'synthetic', epcMiB: 1 });
    try {
      const payload = randomBytes(8192);
      const fields = { arch: 'intel-vmx' as const, kind: 'flat' as const, loadAddress: 0x1000000n, entryOffset: 0, coreSize: 8192, perCpuSize: 4096, loadSize: 16384, featureMask: 0n, buildId: Buffer.from('test') };
      const path = join(dir2, 'hv.heimg');
      const container = buildContainer(payload, fields);
      const bad = Buffer.from(container);
      bad[bad.length - 1]! ^= 1;
      writeFileSync(path, bad);
      const digest = createHash('sha256').update(payload).digest('hex');
      await expect(c2.load(path, digest)).rejects.toThrow(/image/i);
      writeFileSync(path, container);
      const img = await c2.load(path, digest);
      expect(img).toMatchObject({ format: 'container', sha256: digest, length: container.length });
      expect(img.id).toMatch(/^[0-9a-f]{64}$/);
      expect((await c2.imageDigest()).toString('hex')).toBe(digest);
    } finally {
      c2.close();
      await stopHypervisorService(dir2);
      rmSync(dir2, { recursive: true, force: true });
    }
  });

  it('MRENCLAVE/MRSIGNER of the Linux SGX selftest enclave through the ABI match the known answer', async () => {
    const id = await createSelftest(c);
    const info = await c.enclaveInfo(id);
    expect(info.state).toBe('initialized');
    expect(info.mrenclave.toString('hex')).toBe(SELFTEST_MRENCLAVE);
    expect(info.mrsigner.toString('hex')).toBe(SELFTEST_MRSIGNER);
    const before = (await c.status()).hv!.epcPagesUsed;
    expect(before).toBe(info.epcPages);
    expect(await c.enclaveDestroy(id)).toBe(info.epcPages);
    expect((await c.status()).hv!.epcPagesUsed).toBe(0);
  });

  it('host reads of hypervisor and enclave memory are allowed before ENABLE and refused after', async () => {
    const s0 = await c.status();
    const hvBase = s0.hv!.reservedBase;
    const epcBase = hvBase + s0.hv!.hypervisorBytes;
    const id = await createSelftest(c);
    expect(await c.hostAccess(hvBase, 'read')).toBeNull();
    expect(await c.hostAccess(epcBase, 'read')).toBeNull();
    await c.enable();
    const s1 = await c.status();
    expect(s1.enabled).toBe(true);
    expect(await c.hostAccess(hvBase, 'read')).toMatch(/refused: hypervisor memory/);
    expect(await c.hostAccess(epcBase + 0x3000n, 'read')).toMatch(/refused: (memory of enclave \d+|enclave page cache)/);
    expect(await c.hostAccess(0x100000n, 'read')).toBeNull();
    const s2 = await c.status();
    expect(s2.hv!.hostFaults.hypervisor).toBeGreaterThanOrEqual(1);
    expect(s2.hv!.hostFaults.enclave).toBeGreaterThanOrEqual(1);
    // Hypercalls still work after demotion: their buffers are staged in host RAM.
    expect((await c.enclaveInfo(id)).mrenclave.toString('hex')).toBe(SELFTEST_MRENCLAVE);
    await expect(c.disable()).rejects.toThrow(/ENCLAVES_ALIVE/);
    await c.enclaveDestroy(id);
    await c.disable();
    expect((await c.status()).enabled).toBe(false);
    expect(await c.hostAccess(hvBase, 'read')).toBeNull();
  });

  it('refuses bad inputs cleanly, naming the status', async () => {
    const code = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return 'SUCCESS';
      } catch (e) {
        return (e as Error).message.split(':')[1]!.trim().split(' ')[0]!;
      }
    };
    const page = Buffer.alloc(4096, 1);
    expect(await code(c.enclaveCreate({ size: 0x7000n, base: 0n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n }))).toBe('SECS_INVALID');
    expect(await code(c.enclaveCreate({ size: 0x8000n, base: 0x1000n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n }))).toBe('SECS_INVALID');
    const id = await c.enclaveCreate({ size: 0x8000n, base: 0n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n });
    await c.enclaveAdd(id, 0x1000n, page, SECINFO.PT_REG | 3);
    expect(await code(c.enclaveAdd(id, 0x1000n, page, SECINFO.PT_REG | 3))).toBe('PAGE_OVERLAP');
    expect(await code(c.enclaveAdd(id, 0x8000n, page, SECINFO.PT_REG | 3))).toBe('OUTSIDE_ELRANGE');
    expect(await code(c.enclaveAdd(id, 0x1800n, page, SECINFO.PT_REG | 3))).toBe('INVALID_ARGUMENT');
    expect(await code(c.enclaveAdd(id, 0x2000n, page, SECINFO.PT_TCS))).toBe('TCS_INVALID');
    expect(await code(c.enclaveExtend(id, 0x1010n))).toBe('INVALID_ARGUMENT');
    const ss = Buffer.from(fx('encl.ss'));
    expect(await code(c.enclaveInit(id, ss))).toBe('MEASUREMENT_MISMATCH');
    ss[1100] ^= 1;
    expect(await code(c.enclaveInit(id, ss))).toBe('SIGNATURE_INVALID');
    await c.enclaveDestroy(id);
    const done = await createSelftest(c);
    expect(await code(c.enclaveAdd(done, 0x7000n, page, SECINFO.PT_REG | 3))).toBe('ENCLAVE_STATE');
    await c.enclaveDestroy(done);
    expect(await code(c.enclaveDestroy(done))).toBe('NO_SUCH_ENCLAVE');

    // EPC exhausted: 256 EPC pages, a 2 MiB enclave; nothing leaks afterwards.
    const big = await c.enclaveCreate({ size: 0x200000n, base: 0n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n });
    const pages = [...Array(256).keys()].map((i) => ({ offset: BigInt(i * 4096), data: page, flags: SECINFO.PT_REG | 3, measure: false }));
    const err = await c.enclaveAddPages(big, pages).then(
      () => null,
      (e: Error & { exitCode: number }) => e,
    );
    expect(err?.message).toMatch(/ENCLAVE_ADD: EPC_EXHAUSTED \(enclave page cache exhausted\): enclave \d+ offset 0xff000/);
    expect(err?.exitCode).toBe(6);
    expect(await c.enclaveDestroy(big)).toBe(256);
    const s = await c.status();
    expect([s.hv!.epcPagesUsed, s.hv!.enclaves]).toEqual([0, 0]);
    expect(STATUS_CODE.EPC_EXHAUSTED).toBe(25);
  });
});
