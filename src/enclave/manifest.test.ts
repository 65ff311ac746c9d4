import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadPayload, parseLayout, planEnclave } from './layout.js';
import { loadManifest, parseManifest, parseSize, withBackend } from './manifest.js';
import { pathMissing, skipUnless } from '../../test/helpers/require.js';

const dir = mkdtempSync(join(tmpdir(), 'he-man-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = {
  schema: 'hyperenclave/enclave-manifest',
  version: 1,
  name: 'hello',
  payload: { image: 'hello.bin', layout: 'hello.layout.json' },
  size: '64K',
  threads: 2,
  attributes: { debug: true },
  backend: { kind: 'sev', policy: 1 },
  signer: { key: 'signer.pem' },
  isvProdId: 3,
  isvSvn: 1,
};

describe('enclave manifest', () => {
  it('parses sizes and resolves paths relative to the manifest', () => {
    expect(parseSize('64K', 'x')).toBe(65536n);
    expect(parseSize('0x8000', 'x')).toBe(0x8000n);
    expect(parseSize(4096, 'x')).toBe(4096n);
    const f = join(dir, 'm.json');
    writeFileSync(f, JSON.stringify(base));
    const m = loadManifest(f);
    expect(m).toMatchObject({ name: 'hello', size: 65536n, threads: 2, debug: true, ssaFrameSize: 1, backend: { kind: 'sev', policy: 1 }, isvProdId: 3 });
    expect(m.payload.image).toBe(join(dir, 'hello.bin'));
    expect(m.signer.key).toBe(join(dir, 'signer.pem'));
    expect(withBackend(m, 'mktme').backend).toEqual({ kind: 'mktme', policy: undefined });
  });

  it('refuses bad manifests with the JSON path of each problem', () => {
    const bad = (patch: Record<string, unknown>) => () => parseManifest({ ...base, ...patch }, 'm.json');
    expect(bad({ size: '48K' })).toThrow('m.json: /size: 0xc000 must be a power of two of at least 8 KiB');
    expect(bad({ size: '4K' })).toThrow(/\/size: 0x1000 must be a power of two/);
    expect(bad({ base: '0x1000' })).toThrow('m.json: /base: 0x1000 is not aligned to /size 0x10000');
    expect(bad({ threads: 0 })).toThrow(/\/threads: must be >= 1/);
    expect(bad({ backend: { kind: 'tdx' } })).toThrow(/\/backend\/kind: must be one of "none", "sev", "sev-es", "csv", "mktme"/);
    expect(bad({ colour: 'red' })).toThrow(/\/: unknown property "colour"/);
    expect(bad({ isvSvn: 70000 })).toThrow(/\/isvSvn: must be <= 65535/);
    expect(bad({ size: '12Q' })).toThrow(/\/size/);
    expect(() => loadManifest(join(dir, 'none.json'))).toThrow(/not found/);
    writeFileSync(join(dir, 'broken.json'), '{');
    expect(() => loadManifest(join(dir, 'broken.json'))).toThrow(/broken\.json: not JSON/);
  });
});

describe('enclave layout plan', () => {
  const m = parseManifest({ ...base, size: '64K' }, join(dir, 'm.json'));
  const layout = parseLayout({ entry: 0x10, segments: [{ offset: 0, size: 0x1000, perms: 'rx' }, { offset: 0x1000, size: 0x1000, perms: 'rw' }], stackPages: 2 }, 'l.json');

  it('lays out image pages, then per thread TCS + SSA + stack, with TCS fields the core checks', () => {
    const img = Buffer.alloc(0x1800, 0x90);
    const plan = planEnclave(m, img, layout);
    expect(plan.pages.map((p) => [Number(p.offset), p.flags])).toEqual([
      [0x0000, 0x205],
      [0x1000, 0x203],
      [0x2000, 0x100],
      [0x3000, 0x203],
      [0x4000, 0x203],
      [0x5000, 0x203],
      [0x6000, 0x100],
      [0x7000, 0x203],
      [0x8000, 0x203],
      [0x9000, 0x203],
    ]);
    expect(plan.tcs).toEqual([0x2000n, 0x6000n]);
    const tcs = Buffer.from(plan.pages[2]!.data);
    expect([tcs.readBigUInt64LE(8), tcs.readBigUInt64LE(16), tcs.readUInt32LE(28), tcs.readBigUInt64LE(32)]).toEqual([1n, 0x3000n, 1, 0x10n]);
    expect(plan.attributes).toBe(6n);
    expect(plan.pages[1]!.data.subarray(0x800).every((b) => b === 0)).toBe(true);
  });

  it('refuses an image larger than the declared size, and entry points outside the image', () => {
    expect(() => planEnclave(m, Buffer.alloc(0x20000), layout)).toThrow(/is 131072 bytes, larger than the declared \/size 0x10000/);
    expect(() => planEnclave({ ...m, threads: 8 }, Buffer.alloc(0x4000), layout)).toThrow(/8 thread\(s\) × 4 pages .* larger than the declared \/size 0x10000/);
    expect(() => planEnclave(m, Buffer.alloc(0x8), layout)).toThrow(/\/entry 0x10 is outside the 8-byte image/);
    expect(() => parseLayout({ entry: 0, segments: [{ offset: 0, size: 1, perms: 'rwz' }] }, 'l.json')).toThrow('l.json: /segments/0/perms "rwz" is not a subset of "rwx"');
  });
});

describe('payload layouts from hypervisor/enclaves/build.sh', () => {
  const f = new URL('../../test/fixtures/enclave/crypto.manifest.json', import.meta.url).pathname;
  const built = !skipUnless('payload layout test', [['enclave-payloads', pathMissing(new URL('../../hypervisor/enclaves/out/crypto.json', import.meta.url).pathname, 'run hypervisor/enclaves/build.sh')]]);
  it.skipIf(!built)('uses the page list as linked (TCS first, base from the layout) and refuses a too-small size', () => {
    const m = loadManifest(f);
    const { image, layout } = loadPayload(m);
    const plan = planEnclave(m, image, layout);
    expect(plan.base).toBe(layout.base);
    expect(plan.tcs).toEqual([0n]);
    expect(plan.pages[0]!.flags).toBe(0x100);
    expect(plan.pages.length).toBe((layout.raw.pages as unknown[]).length);
    expect(() => planEnclave({ ...m, size: 0x4000n }, image, layout)).toThrow(/larger than the declared \/size 0x4000/);
    expect(() => planEnclave({ ...m, threads: 2 }, image, layout)).toThrow(/\/threads 2 but the payload .* 1 TCS page/);
    expect(() => planEnclave({ ...m, base: 0n }, image, layout)).toThrow(/differs from the address the payload is linked at/);
  });
});
