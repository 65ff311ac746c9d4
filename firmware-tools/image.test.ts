import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { IMAGE_HEADER_SIZE, verifyContainerBytes, verifyContainerFile } from '../src/measure/container.js';
import { loadPolicy } from '../src/measure/policy.js';
import { ElfError, flatLoadImage, parseElf64 } from './elf.js';
import { buildImage, buildImageFile, readSigningKey, signImageFile } from './image.js';
import { checkReferenceValues, parseInitialValues, referenceValuesFile } from './reference.js';
import { buildLaunchEnvironment } from '../src/txt/launch-env.js';
import { present } from '../test/helpers/require.js';

const fx = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'measure');
const tiny = readFileSync(join(fx, 'tiny.elf'));
const dir = mkdtempSync(join(tmpdir(), 'fw-image-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ELF64 → flat load image', () => {
  it('parses the fixture ELF as readelf does', () => {
    const elf = parseElf64(tiny);
    expect(elf.entry).toBe(0x401000n);
    const loads = elf.segments.filter((s) => s.type === 1);
    expect(loads.map((s) => [s.vaddr, s.filesz, s.memsz])).toEqual([
      [0x400000n, 0x1b4, 0x1b4],
      [0x401000n, 0x13, 0x13],
      [0x402000n, 0x2c, 0x2c],
      [0x403000n, 0x40, 0x2040],
    ]);
    expect(elf.buildId?.toString('hex')).toBe('79462a8331b53a0387398dd6b25c60b3b96da256');
  });

  it('lays segments out by address: gaps zero, file bytes in place, trailing bss only in the load size', () => {
    const elf = parseElf64(tiny);
    const flat = flatLoadImage(elf, tiny);
    expect(flat.loadAddress).toBe(0x400000n);
    expect(flat.entryOffset).toBe(0x1000);
    expect(flat.image.length).toBe(0x3040);
    expect(flat.loadSize).toBe(0x5040);
    expect(flat.image.subarray(0x1000, 0x1013)).toEqual(tiny.subarray(0x1000, 0x1013));
    expect(flat.image.subarray(0x3000, 0x3040)).toEqual(tiny.subarray(0x3000, 0x3040));
    expect(flat.image.subarray(0x1013, 0x2000).every((b) => b === 0)).toBe(true);
  });

  it('agrees with objcopy -O binary on the fixture and on a system ELF (/bin/true)', () => {
    for (const path of [join(fx, 'tiny.elf'), '/bin/true']) {
      const r = spawnSync('objcopy', ['-O', 'binary', path, join(dir, 'objcopy.bin')]);
      if (!present(`objcopy comparison for ${path}`, 'binutils', r.status !== 0 && `objcopy ${r.error ? 'absent' : `failed (exit ${r.status})`} (apt-get install binutils)`)) continue;
      const bin = readFileSync(path);
      const flat = flatLoadImage(parseElf64(bin), bin);
      // objcopy starts at the lowest allocated section, we at the lowest PT_LOAD address; both end
      // at the last file-backed byte, so objcopy's output is a suffix of ours
      const ref = readFileSync(join(dir, 'objcopy.bin'));
      expect(ref.length).toBeGreaterThan(0);
      expect(flat.image.subarray(flat.image.length - ref.length).equals(ref), path).toBe(true);
    }
  });

  it('refuses bad ELFs with the field and offset', () => {
    const bad = (mut: (b: Buffer) => void) => {
      const b = Buffer.from(tiny);
      mut(b);
      try {
        flatLoadImage(parseElf64(b), b);
      } catch (e) {
        expect(e).toBeInstanceOf(ElfError);
        return (e as Error).message;
      }
      throw new Error('expected ElfError');
    };
    expect(bad((b) => (b[0] = 0))).toBe('ELF: bad magic at offset 0x0: 00454c46, expected 7f454c46');
    expect(bad((b) => (b[4] = 1))).toBe('ELF: class 1 at offset 0x4 is not ELFCLASS64 (2)');
    expect(bad((b) => b.writeUInt16LE(183, 18))).toBe('ELF: machine 183 at offset 0x12 is not x86-64 (62)');
    expect(bad((b) => b.writeBigUInt64LE(0x100000n, 64 + 56 + 32))).toMatch(/^ELF: segment 1 \(program header at 0x78\) file range 0x1000\+0x100000 runs past the end of the 13360-byte file$/);
    expect(bad((b) => b.writeBigUInt64LE(0x10n, 64 + 56 * 3 + 40))).toMatch(/^ELF: segment 3 .* has p_filesz 0x40 > p_memsz 0x10$/);
    expect(bad((b) => b.writeBigUInt64LE(0x900000n, 24))).toMatch(/^ELF: entry point 0x900000 \(e_entry at offset 0x18\) lies outside the loaded range 0x400000\.\.0x405040$/);
    expect(() => parseElf64(tiny.subarray(0, 40))).toThrow('ELF: truncated: 40 bytes, the ELF64 header needs 64');
  });
});

describe('firmware build / sign / reference', () => {
  it('builds a signed container from the ELF; the header carries the ELF facts', async () => {
    const out = join(dir, 'hv.heimg');
    buildImageFile(join(fx, 'tiny.elf'), out, { arch: 'amd-svm', perCpuSize: 0x4000, featureMask: 0x3n }, join(fx, 'p384.pem'));
    const v = await verifyContainerFile(out, { expectedArch: 'amd-svm', trustedKeys: [readFileSync(join(fx, 'p384.pem'), 'utf8')] });
    expect(v.header).toMatchObject({ arch: 'amd-svm', kind: 'flat', loadAddress: 0x400000n, entryOffset: 0x1000, loadSize: 0x5040, coreSize: 0x5040, perCpuSize: 0x4000, featureMask: 3n, imageLength: 0x3040, signatureAlg: 'ecdsa-p384-sha384' });
    expect(v.header.buildId.toString('hex')).toBe('79462a8331b53a0387398dd6b25c60b3b96da256');
    // re-sign with SM2: same image, new signer
    signImageFile(out, join(fx, 'sm2.pem'));
    const s = await verifyContainerFile(out, { trustedKeys: [readFileSync(join(fx, 'sm2.pem'), 'utf8')] });
    expect(s.signer?.alg).toBe('sm2-sm3');
    expect(s.header.imageSha256).toEqual(v.header.imageSha256);
  });

  it('raw kind embeds the input bytes as they are', () => {
    const c = buildImage(tiny, { arch: 'hygon', kind: 'raw', entryOffset: 0x1000 }, readSigningKey(join(fx, 'p256.pem')));
    const v = verifyContainerBytes(c, { banks: ['sha256'] });
    expect(v.header.kind).toBe('raw');
    expect(v.imageDigests.sha256).toEqual(createHash('sha256').update(tiny).digest());
    expect(c.subarray(IMAGE_HEADER_SIZE, IMAGE_HEADER_SIZE + tiny.length)).toEqual(tiny);
  });

  it('reference values: schema-valid, PCR 12 = replay of the planned events from zeros or given values, DRTM included', async () => {
    const out = join(dir, 'ref.heimg');
    buildImageFile(join(fx, 'tiny.elf'), out, { arch: 'intel-vmx' }, join(fx, 'p256.pem'));
    const le = buildLaunchEnvironment({ name: 'emulated-sinit', version: 1, arch: 'intel-vmx', payload: Buffer.from('acm payload') });
    const refPath = join(dir, 'ref.json');
    const doc = await referenceValuesFile(out, { policy: loadPolicy('sha256-sha384'), launchEnvironment: le, out: refPath });
    const onDisk = JSON.parse(readFileSync(refPath, 'utf8'));
    expect(checkReferenceValues(onDisk)).toBeUndefined();
    expect(onDisk.schema).toBe('hyperenclave/reference-values');
    let pcr = Buffer.alloc(32);
    for (const e of doc.events) pcr = createHash('sha256').update(pcr).update(Buffer.from(e.digests.sha256!, 'hex')).digest();
    expect(doc.pcrs.sha256!['12']).toBe(pcr.toString('hex'));
    expect(doc.events.map((e) => e.measure)).toEqual(['image', 'header', 'signer']);
    expect(doc.hypervisor?.digests.sha256).toEqual([doc.image.imageSha256]);
    expect(Object.keys(doc.pcrs.sha384!)).toEqual(['12', '17', '18']);
    // from given initial values
    const init = 'ab'.repeat(32);
    const doc2 = await referenceValuesFile(out, { policy: loadPolicy('sha256-sha384'), banks: ['sha256'], initial: parseInitialValues(`sha256:12=${init}`) });
    let p2 = Buffer.from(init, 'hex');
    for (const e of doc2.events) p2 = createHash('sha256').update(p2).update(Buffer.from(e.digests.sha256!, 'hex')).digest();
    expect(doc2.pcrs.sha256!['12']).toBe(p2.toString('hex'));
    expect(doc2.drtm).toBeUndefined();
    // the SM3 policy computes without a TPM
    const sm3 = await referenceValuesFile(out, { policy: loadPolicy('hyperenclave-sm3') });
    expect(sm3.pcrs.sm3_256!['12']).toBe(createHash('sm3').update(Buffer.alloc(32)).update(Buffer.from(sm3.events[0]!.digests.sm3_256!, 'hex')).digest('hex'));
    expect(checkReferenceValues({ ...onDisk, pcrs: { sha256: { '24': 'aa' } } })).toMatch(/^\/pcrs\/sha256: must match pattern/);
  });

  it('a changed image byte changes every predicted value', async () => {
    const a = join(dir, 'a.heimg');
    const b = join(dir, 'b.heimg');
    buildImageFile(join(fx, 'tiny.elf'), a, { arch: 'intel-vmx' });
    const elf = Buffer.from(tiny);
    elf[0x1001]! ^= 1; // inside .text
    writeFileSync(join(dir, 'b.elf'), elf);
    buildImageFile(join(dir, 'b.elf'), b, { arch: 'intel-vmx', buildId: parseElf64(tiny).buildId! });
    const le = buildLaunchEnvironment({ name: 'le', version: 1, arch: 'intel-vmx', payload: Buffer.alloc(0) });
    const ra = await referenceValuesFile(a, { policy: loadPolicy(), launchEnvironment: le });
    const rb = await referenceValuesFile(b, { policy: loadPolicy(), launchEnvironment: le });
    for (const bank of ['sha256', 'sha384'])
      for (const p of ['12', '17']) expect(ra.pcrs[bank]![p], `${bank}:${p}`).not.toBe(rb.pcrs[bank]![p]);
    expect(ra.pcrs.sha256!['18']).toBe(rb.pcrs.sha256!['18']); // same (no) signer
  });
});
