import { stopEmulatedTpm } from '../platform/emulated/tpm-daemon.js';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addonCore } from '../hypervisor/addon-adapter.js';
import { disableHypervisor, enableHypervisor, hypervisorStatus, stopHypervisor } from '../hypervisor/index.js';
import { serviceEntry } from '../platform/emulated/hypervisor-service.js';
import { createEnclaveFromManifest, destroyEnclaveById, listEnclaves, parseEcallSpec, runEnclaveFromManifest } from './service.js';
import { skipUnless } from '../../test/helpers/require.js';

const fixture = (n: string): string => new URL(`../../test/fixtures/enclave/${n}`, import.meta.url).pathname;

describe('--ecall specs', () => {
  it('parses FN, FN:HEX and FN=TEXT and refuses the rest', () => {
    expect(parseEcallSpec('4')).toEqual({ fn: 4 });
    expect(parseEcallSpec('1:0a0b')).toEqual({ fn: 1, input: Buffer.from([10, 11]) });
    expect(parseEcallSpec('2=abc')).toEqual({ fn: 2, input: Buffer.from('abc') });
    expect(parseEcallSpec('2@3=abc')).toEqual({ fn: 2, thread: 3, input: Buffer.from('abc') });
    expect(parseEcallSpec('0@1')).toEqual({ fn: 0, thread: 1 });
    expect(() => parseEcallSpec('x')).toThrow('--ecall "x": expected FN, FN:HEX or FN=TEXT (FN@THREAD to pick the TCS)');
    expect(() => parseEcallSpec('1@')).toThrow(/expected FN/);
    expect(() => parseEcallSpec('1:abc')).toThrow(/odd number of hex digits/);
  });
});

const noAddon = await addonCore().then(() => undefined, (e: Error) => e.message);
const why = skipUnless('enclave CLI service API tests', [
  ['cli', existsSync(serviceEntry()) ? undefined : `${serviceEntry()} missing (npm run build)`],
  ['enclave-payloads', existsSync(new URL('../../hypervisor/enclaves/out/crypto.json', import.meta.url).pathname) ? undefined : 'enclave payloads not built (hypervisor/enclaves/build.sh)'],
  ['addon', noAddon],
  ['kvm', !noAddon && await addonCore().then((m) => {
    const hv = m.createHypervisor({ base: 0x100000000n, total: 3n << 20n, hypervisorSize: 2n << 20n, imageSize: 0n, paging: 'ept', imageDigest: Buffer.alloc(32), keySlots: null, requireSignedSigstruct: true });
    const r = hv.kvmUnavailable();
    hv.close();
    return r ?? undefined;
  })],
]);

describe.skipIf(!!why)('CLI service API across invocations (each call its own connection)', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'he-cli-'));
  const platform = { kind: 'emulated' as const, stateDir };
  afterAll(async () => {
    await stopHypervisor(platform);
    await stopEmulatedTpm(stateDir); // the service's core started it to seal its root
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('enable → enclave run --backend sev → create/list/destroy → disable', async () => {
    const img = join(stateDir, 'hv.img');
    writeFileSync(img, 'image');
    const s = await enableHypervisor(platform, { image: { path: img, sha256: createHash('sha256').update('image').digest('hex') } });
    expect([s.loaded, s.enabled]).toEqual([true, true]);
    expect((await enableHypervisor(platform)).enabled).toBe(true);

    const run = await runEnclaveFromManifest(platform, fixture('crypto.manifest.json'), { backend: 'sev', ecalls: [parseEcallSpec('2=hello')] });
    expect(run.backend).toBe('sev');
    expect(run.launch?.algorithm).toBe('hmac-sha256');
    expect(run.ecalls[0]!.output).toBe(createHash('sha256').update('hello').digest('hex'));
    expect(run.destroyed).toBe(true);

    const kept = await createEnclaveFromManifest(platform, fixture('crypto.manifest.json'), { backend: 'mktme' });
    const listed = await listEnclaves(platform);
    expect(listed.map((e) => [e.id, e.name, e.backend, e.state])).toEqual([[kept.id, 'crypto', 'mktme', 'initialized']]);
    expect(listed[0]!.mrenclave).toBe(run.mrenclave);
    await expect(disableHypervisor(platform)).rejects.toThrow(/ENCLAVES_ALIVE/);
    expect(await destroyEnclaveById(platform, kept.id)).toBe(kept.epcPages);
    expect((await disableHypervisor(platform)).enabled).toBe(false);
    const after = await hypervisorStatus(platform);
    expect([after.enclaves.length, after.hv!.keySlotsAllocated, after.hv!.keySlotsPendingFlush, after.hv!.enclavesCreated]).toEqual([0, 0, 0, 2]);
  });
});
