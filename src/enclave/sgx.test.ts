import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildSigstruct, computeMrEnclave, loadSignerKey, mrsignerOf, verifySigstruct, type MeasuredPage } from './sgx.js';

const fx = (n: string): Buffer => readFileSync(new URL(`../../test/fixtures/enclave/${n}`, import.meta.url));

describe('SGX measurement and SIGSTRUCT (TypeScript)', () => {
  it('reproduces the Linux SGX selftest MRENCLAVE and verifies its sgxsign SIGSTRUCT', () => {
    const img = fx('encl.bin');
    const pages: MeasuredPage[] = [];
    for (let i = 0; i < img.length / 4096; i++) pages.push({ offset: BigInt(i * 4096), flags: i === 0 ? 0x100 : 0x207, data: img.subarray(i * 4096, (i + 1) * 4096) });
    const mr = computeMrEnclave(0x8000n, 1, pages);
    expect(mr.toString('hex')).toBe('b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0');
    const v = verifySigstruct(fx('encl.ss'));
    expect(v.enclaveHash.equals(mr)).toBe(true);
    expect(v.mrsigner.toString('hex')).toBe('2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4');
    const bad = Buffer.from(fx('encl.ss'));
    bad[1026] ^= 1;
    expect(() => verifySigstruct(bad)).toThrow(/does not verify/);
  });

  it('signs a SIGSTRUCT with a fresh RSA-3072 e=3 key; MRSIGNER is SHA-256 of the LE modulus', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 3072, publicExponent: 3 });
    const key = loadSignerKey(privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const ss = buildSigstruct({ attributes: 4n, xfrm: 3n, enclaveHash: Buffer.alloc(32, 0x42), isvProdId: 7, isvSvn: 2 }, key);
    const v = verifySigstruct(ss);
    expect(v.mrsigner.equals(mrsignerOf(key))).toBe(true);
    expect(ss.readUInt16LE(1024)).toBe(7);
    const { privateKey: e65537 } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(() => loadSignerKey(e65537.export({ type: 'pkcs8', format: 'pem' }))).toThrow(/RSA-3072 with e=3.*2048 bits e=65537/);
  });
});
