import { createHash, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sm2GenerateKey, sm2PrivateKeyFromPem, sm2PrivateKeyToPem, sm2PublicKeyToPem } from '../crypto/sm2.js';
import {
  HDR,
  IMAGE_HEADER_SIZE,
  encodeHeader,
  type ImageFields,
  buildContainer,
  resignContainer,
  signingKeyFromPem,
  verifyContainerBytes,
  verifyContainerFile,
} from './container.js';
import { ImageError } from './errors.js';

const dir = mkdtempSync(join(tmpdir(), 'measure-container-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fields: ImageFields = {
  arch: 'intel-vmx',
  kind: 'flat',
  loadAddress: 0xffffff0000000000n,
  entryOffset: 0x40,
  coreSize: 0x3000,
  perCpuSize: 0x1000,
  loadSize: 0x4000,
  featureMask: 0x5n,
  buildId: Buffer.from('0123456789abcdef0123456789abcdef01234567', 'hex'),
};
const image = randomBytes(0x2345);

const ecPem = (curve: string) => generateKeyPairSync('ec', { namedCurve: curve }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const p256 = signingKeyFromPem(ecPem('prime256v1'));
const p384 = signingKeyFromPem(ecPem('secp384r1'));
const sm2Pem = sm2PrivateKeyToPem(sm2GenerateKey());
const sm2 = signingKeyFromPem(sm2Pem);

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ImageError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected an ImageError');
}

describe('image container', () => {
  it('round trip: unsigned, ECDSA P-256, ECDSA P-384, SM2', () => {
    for (const [signer, alg] of [[undefined, 'none'], [p256, 'ecdsa-p256-sha256'], [p384, 'ecdsa-p384-sha384'], [sm2, 'sm2-sm3']] as const) {
      const c = buildContainer(image, fields, signer);
      const v = verifyContainerBytes(c, { banks: ['sha256', 'sha384', 'sha512', 'sm3_256'], expectedArch: 'intel-vmx' });
      expect(v.header).toMatchObject({ ...fields, imageLength: image.length, signatureAlg: alg });
      expect(v.imageDigests.sha256).toEqual(createHash('sha256').update(image).digest());
      expect(v.imageDigests.sm3_256).toEqual(createHash('sm3').update(image).digest());
      expect(v.imageDigests.sha512).toEqual(createHash('sha512').update(image).digest());
      expect(v.signer?.alg ?? 'none').toBe(alg);
      expect(v.id).toBe(createHash('sha256').update(c.subarray(0, IMAGE_HEADER_SIZE)).digest('hex'));
    }
  });

  it('trusted keys: the signer must be one of them; an unsigned image is refused when a signature is required', () => {
    const c = buildContainer(image, fields, sm2);
    expect(verifyContainerBytes(c, { trustedKeys: [sm2Pem] }).signer?.alg).toBe('sm2-sm3');
    // public-key PEMs work as trusted keys too
    expect(verifyContainerBytes(c, { trustedKeys: [sm2PublicKeyToPem(sm2PrivateKeyFromPem(sm2Pem).publicKey)] }).signer?.alg).toBe('sm2-sm3');
    const p256Pem = ecPem('prime256v1');
    const c256 = buildContainer(image, fields, signingKeyFromPem(p256Pem));
    expect(verifyContainerBytes(c256, { trustedKeys: [createPublicKey(p256Pem).export({ type: 'spki', format: 'pem' }) as string] }).signer?.alg).toBe('ecdsa-p256-sha256');
    expect(refusal(() => verifyContainerBytes(c, { trustedKeys: [ecPem('prime256v1')] }))).toMatch(/^image: signed by key [0-9a-f]{64}, which is not one of the 1 trusted keys$/);
    expect(refusal(() => verifyContainerBytes(buildContainer(image, fields), { requireSignature: true }))).toMatch(/unsigned \(signature algorithm at offset 0xe is none\)/);
  });

  it('parallel (one bank per core) digests equal one-shot digests, on both sides of the slot ring', async () => {
    const big = randomBytes(5 * 1024 * 1024 + 77);
    const path = join(dir, 'par.heimg');
    writeFileSync(path, buildContainer(big, { ...fields, kind: 'raw', loadSize: big.length, coreSize: big.length }));
    for (const chunkSize of [65536, 1024 * 1024]) {
      const v = await verifyContainerFile(path, { banks: ['sha1', 'sha256', 'sha384', 'sha512', 'sm3_256'], chunkSize, parallel: true });
      for (const [bank, node] of [['sha1', 'sha1'], ['sha256', 'sha256'], ['sha384', 'sha384'], ['sha512', 'sha512'], ['sm3_256', 'sm3']] as const)
        expect(v.imageDigests[bank]!.toString('hex'), `${bank} chunk ${chunkSize}`).toBe(createHash(node).update(big).digest('hex'));
    }
    const bad = readFileSync(path);
    bad[IMAGE_HEADER_SIZE + 3 * 1024 * 1024]! ^= 1;
    writeFileSync(path, bad);
    await expect(verifyContainerFile(path, { banks: ['sha256', 'sha384'], parallel: true })).rejects.toThrow(/^image: image bytes .* have sha256 /);
  });

  it('streaming file digests equal one-shot digests across many chunks', async () => {
    const big = randomBytes(3 * 65536 + 123);
    const path = join(dir, 'big.heimg');
    writeFileSync(path, buildContainer(big, { ...fields, loadSize: big.length, coreSize: big.length }, p384));
    const v = await verifyContainerFile(path, { banks: ['sha1', 'sha256', 'sha384', 'sm3_256'], chunkSize: 65536 });
    for (const [bank, node] of [['sha1', 'sha1'], ['sha256', 'sha256'], ['sha384', 'sha384'], ['sm3_256', 'sm3']] as const)
      expect(v.imageDigests[bank]!.toString('hex'), bank).toBe(createHash(node).update(big).digest('hex'));
  });

  it('a 256 MiB image verifies with bounded memory (sparse file, never loaded whole)', async () => {
    const len = 256 * 1024 * 1024;
    const zeros = Buffer.alloc(4 * 1024 * 1024);
    const h256 = createHash('sha256');
    const h384 = createHash('sha384');
    for (let o = 0; o < len; o += zeros.length) {
      h256.update(zeros);
      h384.update(zeros);
    }
    const header = encodeHeader({ ...fields, kind: 'raw', loadSize: len, coreSize: len, imageLength: len, signatureAlg: 'none', signatureLength: 0, imageSha256: h256.digest(), imageSha384: h384.digest(), signerKeyId: Buffer.alloc(32) });
    const path = join(dir, 'sparse.heimg');
    const fd = openSync(path, 'w');
    writeSync(fd, header);
    ftruncateSync(fd, IMAGE_HEADER_SIZE + len);
    closeSync(fd);
    const before = process.memoryUsage();
    let peak = 0;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss - before.rss, process.memoryUsage().arrayBuffers - before.arrayBuffers)), 5);
    const v = await verifyContainerFile(path, { banks: ['sha256'] });
    clearInterval(timer);
    expect(v.header.imageLength).toBe(len);
    expect(peak).toBeLessThan(64 * 1024 * 1024);
  });

  it('fuzz: random byte edits and truncations give an ImageError or a verified image, never another exception', () => {
    const base = buildContainer(image.subarray(0, 600), { ...fields, loadSize: 0x1000, coreSize: 0x1000 }, sm2);
    let refused = 0;
    for (let i = 0; i < 3000; i++) {
      const c = Buffer.from(base.subarray(0, i % 7 === 0 ? Math.floor(Math.random() * base.length) : base.length));
      for (let k = 0; k < 1 + (i % 4); k++) if (c.length) c[Math.floor(Math.random() * Math.min(c.length, i % 2 ? IMAGE_HEADER_SIZE : c.length))] = Math.floor(Math.random() * 256);
      try {
        verifyContainerBytes(c, { banks: ['sha256'] });
      } catch (e) {
        if (!(e instanceof ImageError)) throw new Error(`mutation ${i} raised ${(e as Error).name}: ${(e as Error).message}`);
        expect((e as Error).message).not.toContain('\n');
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(2500);
  });

  describe('refusals (one line naming the field/offset)', () => {
    const signed = buildContainer(image, fields, p256);
    const sigStart = IMAGE_HEADER_SIZE + image.length;

    it('truncated at several offsets', async () => {
      for (const cut of [0, 4, 8, 100, IMAGE_HEADER_SIZE - 1]) expect(refusal(() => verifyContainerBytes(signed.subarray(0, cut)))).toMatch(/^image: truncated header: \d+ bytes, the header needs 256/);
      expect(refusal(() => verifyContainerBytes(signed.subarray(0, IMAGE_HEADER_SIZE + 10)))).toBe(
        `image: truncated: the file is ${IMAGE_HEADER_SIZE + 10} bytes, the image length at offset 0x40 says the image ends at offset 0x${(IMAGE_HEADER_SIZE + image.length).toString(16)}`,
      );
      expect(refusal(() => verifyContainerBytes(signed.subarray(0, sigStart + 5)))).toMatch(/^image: truncated: the file is \d+ bytes, the signature block should end at offset 0x/);
      const path = join(dir, 'trunc.heimg');
      writeFileSync(path, signed.subarray(0, sigStart - 1));
      await expect(verifyContainerFile(path)).rejects.toThrow(/^image: truncated: the file is \d+ bytes, the image length at offset 0x40/);
    });

    it('oversized length field, above the configured maximum, trailing bytes', () => {
      const c = Buffer.from(signed);
      c.writeBigUInt64LE(0x7fffffffn, HDR.imageLength);
      expect(refusal(() => verifyContainerBytes(c))).toBe('image: image length 2147483647 at offset 0x40 exceeds the configured maximum 1073741824');
      c.writeBigUInt64LE(0xffffffffffffffffn, HDR.imageLength);
      expect(refusal(() => verifyContainerBytes(c))).toBe('image: image length at offset 0x40 is 18446744073709551615, beyond 2^53');
      expect(refusal(() => verifyContainerBytes(signed, { maxImageLength: 4096 }))).toBe(`image: image length ${image.length} at offset 0x40 exceeds the configured maximum 4096`);
      expect(refusal(() => verifyContainerBytes(Buffer.concat([signed, Buffer.from([0])])))).toMatch(/^image: 1 unexpected bytes after the container's end at offset 0x/);
    });

    it('bad magic, version, header size, arch code, reserved bytes', () => {
      const mut = (at: number, v: number) => {
        const c = Buffer.from(signed);
        c[at] = v;
        return c;
      };
      expect(refusal(() => verifyContainerBytes(mut(0, 0x7f)))).toMatch(/^image: bad magic at offset 0x0: expected "HEIMG\\0\\0\\0" \(4845494d47000000\), got 7f45494d47000000$/);
      expect(refusal(() => verifyContainerBytes(mut(HDR.formatVersion, 2)))).toBe('image: unsupported format version 2 at offset 0x8 (this reader knows 1)');
      expect(refusal(() => verifyContainerBytes(mut(HDR.headerSize, 0x80)))).toBe('image: header size 384 at offset 0xa, version 1 headers are 256 bytes');
      expect(refusal(() => verifyContainerBytes(mut(HDR.arch, 9)))).toBe('image: unknown target arch code 9 at offset 0xc (1 intel-vmx, 2 amd-svm, 3 hygon)');
      expect(refusal(() => verifyContainerBytes(mut(0xf0, 1)))).toBe('image: reserved field at offset 0xf0 is 0x1, must be zero');
    });

    it('wrong arch for the platform', () => {
      expect(refusal(() => verifyContainerBytes(signed, { expectedArch: 'hygon' }))).toBe('image: built for intel-vmx (arch at offset 0xc), this platform is hygon');
    });

    it('flipped image byte: digest mismatch (unsigned and signed)', () => {
      for (const c0 of [buildContainer(image, fields), signed]) {
        const c = Buffer.from(c0);
        c[IMAGE_HEADER_SIZE + 1000]! ^= 1;
        expect(refusal(() => verifyContainerBytes(c))).toMatch(/^image: image bytes \(offset 0x100\.\.0x[0-9a-f]+\) have sha256 [0-9a-f]{64}, the header at offset 0x70 says [0-9a-f]{64}$/);
        expect(refusal(() => verifyContainerBytes(c, { banks: ['sha384'] }))).toMatch(/have sha384 [0-9a-f]{96}, the header at offset 0x90 says/);
      }
    });

    it('bad ECDSA and SM2 signatures; a header edit breaks the signature', () => {
      for (const signer of [p256, p384, sm2]) {
        const c = buildContainer(image, fields, signer);
        const bad = Buffer.from(c);
        bad[bad.length - 5]! ^= 0x40;
        expect(refusal(() => verifyContainerBytes(bad))).toMatch(new RegExp(`^image: bad ${signer.alg} signature at offset 0x[0-9a-f]+ over the header \\(bytes 0x0\\.\\.0x100\\)$`));
        const edited = Buffer.from(c);
        edited.writeBigUInt64LE(0x7n, HDR.featureMask);
        expect(refusal(() => verifyContainerBytes(edited))).toMatch(/^image: bad .* signature/);
      }
      // another key's signature block spliced in: key id mismatch
      const other = resignContainer(signed, signingKeyFromPem(ecPem('prime256v1')));
      const spliced = Buffer.concat([signed.subarray(0, sigStart), other.subarray(sigStart)]);
      expect(refusal(() => verifyContainerBytes(spliced))).toMatch(/^image: signer key at offset 0x[0-9a-f]+ has id [0-9a-f]{64}, the header's signer key id at offset 0xc0 is [0-9a-f]{64}$/);
    });
  });
});
