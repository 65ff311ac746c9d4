import { createHash, randomBytes, randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, type XtsCipher, keyLength, tweakFor, xtsCryptPages, xtsEncrypt, xtsKey } from '../../crypto/xts.js';
import { cryptPages, cryptPagesCopy } from './page-cipher.js';

/** The per-page path: one xtsCryptPages call per page at its own address. */
function perPage(key: ReturnType<typeof xtsKey>, addresses: readonly number[], data: Uint8Array, encrypt: boolean, engine: 'generic' | 'auto'): Buffer {
  return Buffer.concat(addresses.map((a, i) => xtsCryptPages(key, a, data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), encrypt, { engine })));
}

/** Distinct random page addresses, shuffled, from low memory up to 2^46 (above 4 GiB too). */
function scatteredAddresses(n: number): number[] {
  const seen = new Set<number>();
  while (seen.size < n) seen.add(randomInt(0, 2 ** 34) * PAGE_SIZE);
  return [...seen];
}

const CIPHERS: XtsCipher[] = ['aes-128', 'aes-256', 'sm4'];

describe('batched page encryption equals the per-page path', () => {
  for (const cipher of CIPHERS) {
    const n = keyLength(cipher);
    it(`${cipher}: random multi-page inputs at non-contiguous addresses, both directions`, () => {
      for (const pages of [1, 15, 16, 17, 37]) {
        const key = xtsKey(cipher, randomBytes(n), randomBytes(n));
        const addresses = scatteredAddresses(pages);
        const plain = randomBytes(pages * PAGE_SIZE);
        const reference = perPage(key, addresses, plain, true, 'generic');
        const batched = cryptPagesCopy(key, addresses, plain, true);
        expect(batched.equals(reference), `${pages} pages`).toBe(true);
        if (cipher !== 'sm4') {
          expect(perPage(key, addresses, plain, true, 'auto').equals(reference)).toBe(true);
          expect(cryptPagesCopy(key, addresses, plain, true, { engine: 'ecb' }).equals(reference)).toBe(true);
          expect(cryptPagesCopy(key, addresses, reference, false, { engine: 'ecb' }).equals(plain)).toBe(true);
        }
        expect(cryptPagesCopy(key, addresses, reference, false).equals(plain)).toBe(true);
        expect(perPage(key, addresses, batched, false, 'generic').equals(plain)).toBe(true);
      }
    });

    it(`${cipher}: a contiguous run equals xtsCryptPages over the run; in place and unaligned buffers give the same bytes`, () => {
      const key = xtsKey(cipher, randomBytes(n), randomBytes(n));
      const base = 0x7_f000_0000;
      const plain = randomBytes(20 * PAGE_SIZE);
      const expected = xtsCryptPages(key, base, plain, true, { engine: 'generic' });
      expect(cryptPagesCopy(key, base, plain, true).equals(expected)).toBe(true);

      const inPlace = Buffer.from(plain);
      cryptPages(key, base, inPlace, inPlace, true);
      expect(inPlace.equals(expected)).toBe(true);

      // Source and destination overlapping one page apart in one buffer.
      const shared = Buffer.alloc(21 * PAGE_SIZE);
      plain.copy(shared, 0);
      cryptPages(key, base, shared.subarray(0, 20 * PAGE_SIZE), shared.subarray(PAGE_SIZE), true);
      expect(shared.subarray(PAGE_SIZE).equals(expected)).toBe(true);

      // Odd byte offsets (no Uint32Array view possible without a copy).
      const src = Buffer.alloc(plain.length + 1).subarray(1);
      plain.copy(src);
      const dst = Buffer.alloc(plain.length + 3).subarray(3);
      cryptPages(key, base, src, dst, true);
      expect(dst.equals(expected)).toBe(true);
    });
  }

  it('known answers: tweak = page address, 128-bit little-endian, data unit 4 KiB', () => {
    const page = Buffer.from(Array.from({ length: PAGE_SIZE }, (_, i) => i & 0xff));
    const address = 0x1234_5678_9000;
    const answers: Record<string, string> = {
      'aes-128': '971a2c7d9d7a3fb35515995e9567c7e6ff361107e0c82f1ca2a15fe6979f64f4',
      sm4: '443f350240f04e17cf9b9765afdfc12e12479bb90e112c2d27782959ee6cecec',
    };
    for (const [cipher, sha256] of Object.entries(answers)) {
      const key = xtsKey(cipher as XtsCipher, Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex'), Buffer.from('f0e0d0c0b0a090807060504030201000', 'hex'));
      const ct = cryptPagesCopy(key, [address], page, true);
      expect(createHash('sha256').update(ct).digest('hex'), cipher).toBe(sha256);
      expect(ct.equals(xtsEncrypt(key, tweakFor(address), page))).toBe(true);
    }
  });

  it('refuses unaligned addresses, partial pages and mismatched lengths', () => {
    const key = xtsKey('aes-128', randomBytes(16), randomBytes(16));
    const page = Buffer.alloc(PAGE_SIZE);
    expect(() => cryptPagesCopy(key, 0x1001, page, true)).toThrow(/not a 4 KiB-aligned address/);
    expect(() => cryptPagesCopy(key, [0, 0x3000], page, true)).toThrow(/2 page addresses for 1 pages/);
    expect(() => cryptPagesCopy(key, 0, Buffer.alloc(100), true)).toThrow(/whole number of 4 KiB pages/);
    expect(() => cryptPages(key, 0, page, Buffer.alloc(2 * PAGE_SIZE), true)).toThrow(/destination 8192/);
    expect(() => cryptPagesCopy(key, 2 ** 53, page, true)).toThrow(/below 2\^53/);
  });
});
