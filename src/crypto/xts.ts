import { createCipheriv, createDecipheriv } from 'node:crypto';
import { endianness } from 'node:os';
import { CryptoError } from './errors.js';

/**
 * XTS (IEEE Std 1619-2018, NIST SP 800-38E) built from a block cipher in ECB mode, so the same
 * code runs AES (checkable against the IEEE vectors and node's own aes-xts) and SM4 (node has
 * sm4-ecb but no sm4-xts).
 *
 * Memory-encryption convention used by the enclave backends: the data unit is one 4 KiB page
 * (a 512-byte unit is available through `unitSize`), and the 128-bit tweak of a unit is its
 * physical byte address, little-endian (the way IEEE 1619 encodes a data-unit sequence number).
 * So the same plaintext at two addresses gives unrelated ciphertext, and moving a ciphertext page
 * to another address decrypts to garbage.
 */

export type XtsCipher = 'aes-128' | 'aes-256' | 'sm4';

export interface XtsKey {
  cipher: XtsCipher;
  /** Key1: encrypts the data blocks. */
  dataKey: Buffer;
  /** Key2: encrypts the tweak. */
  tweakKey: Buffer;
}

export const PAGE_SIZE = 4096;
const BLOCK = 16;
const CHUNK_UNITS_BYTES = 1 << 20; // bulk work in 1 MiB slices to bound the mask buffer

if (endianness() !== 'LE') throw new CryptoError('xts.ts assumes a little-endian host (Uint32Array tweak arithmetic)');

export function keyLength(cipher: XtsCipher): number {
  return cipher === 'aes-256' ? 32 : 16;
}

export function xtsKey(cipher: XtsCipher, dataKey: Uint8Array, tweakKey: Uint8Array): XtsKey {
  const n = keyLength(cipher);
  if (dataKey.length !== n || tweakKey.length !== n)
    throw new CryptoError(`XTS ${cipher}: keys must be ${n} bytes each (got ${dataKey.length} and ${tweakKey.length})`);
  if (Buffer.compare(Buffer.from(dataKey), Buffer.from(tweakKey)) === 0)
    throw new CryptoError(`XTS ${cipher}: data key equals tweak key (SP 800-38E forbids it)`);
  return { cipher, dataKey: Buffer.from(dataKey), tweakKey: Buffer.from(tweakKey) };
}

/** Splits a 2n-byte XTS key (Key1 ‖ Key2, as IEEE 1619 and OpenSSL write it). Equal halves allowed here for the IEEE vectors. */
export function splitXtsKey(cipher: XtsCipher, key: Uint8Array): XtsKey {
  const n = keyLength(cipher);
  if (key.length !== 2 * n) throw new CryptoError(`XTS ${cipher}: key must be ${2 * n} bytes (Key1 ‖ Key2), got ${key.length}`);
  return { cipher, dataKey: Buffer.from(key.subarray(0, n)), tweakKey: Buffer.from(key.subarray(n)) };
}

/** The 16-byte tweak of a data unit: its number or byte address, little-endian. */
export function tweakFor(value: bigint | number): Buffer {
  let v = BigInt(value);
  if (v < 0n || v >= 1n << 128n) throw new CryptoError(`XTS tweak value ${value} out of range`);
  const t = Buffer.alloc(16);
  for (let i = 0; i < 16; i++, v >>= 8n) t[i] = Number(v & 0xffn);
  return t;
}

function ecb(cipher: XtsCipher, key: Buffer, data: Buffer, encrypt: boolean): Buffer {
  const name = `${cipher}-ecb`;
  const c = encrypt ? createCipheriv(name, key, null) : createDecipheriv(name, key, null);
  c.setAutoPadding(false);
  const out = c.update(data);
  const fin = c.final();
  return fin.length ? Buffer.concat([out, fin]) : out;
}

/** Multiplies the 128-bit little-endian tweak at word offset w of `m` by α in GF(2^128), writing it 4 words later. */
function nextTweak(m: Uint32Array, w: number): void {
  const a0 = m[w]!, a1 = m[w + 1]!, a2 = m[w + 2]!, a3 = m[w + 3]!;
  const carry = a3 >>> 31;
  m[w + 4] = ((a0 << 1) ^ (carry * 0x87)) >>> 0;
  m[w + 5] = ((a1 << 1) | (a0 >>> 31)) >>> 0;
  m[w + 6] = ((a2 << 1) | (a1 >>> 31)) >>> 0;
  m[w + 7] = ((a3 << 1) | (a2 >>> 31)) >>> 0;
}

function xorInto(dst: Buffer, src: Buffer): void {
  const n = dst.length >>> 2;
  const d = new Uint32Array(dst.buffer, dst.byteOffset, n);
  const s = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) d[i]! ^= s[i]!;
}

/** Aligned copy (Uint32Array views need 4-byte aligned offsets). */
function aligned(b: Uint8Array): Buffer {
  const out = Buffer.alloc(b.length);
  out.set(b);
  return out;
}

/** Masks T_0..T_{blocks-1} for units whose encrypted initial tweaks are in `t0s` (16 B each). */
function masks(t0s: Buffer, blocksPerUnit: number): Buffer {
  const units = t0s.length / BLOCK;
  const out = Buffer.alloc(units * blocksPerUnit * BLOCK);
  const m = new Uint32Array(out.buffer, out.byteOffset, out.length >>> 2);
  const t = new Uint32Array(t0s.buffer, t0s.byteOffset, t0s.length >>> 2);
  for (let u = 0; u < units; u++) {
    const base = u * blocksPerUnit * 4;
    m[base] = t[u * 4]!;
    m[base + 1] = t[u * 4 + 1]!;
    m[base + 2] = t[u * 4 + 2]!;
    m[base + 3] = t[u * 4 + 3]!;
    for (let j = 0; j < blocksPerUnit - 1; j++) nextTweak(m, base + j * 4);
  }
  return out;
}

/** mask ⊕ E(data ⊕ mask), block by block; `data` is copied unless `inPlace`. */
function xex(key: XtsKey, mask: Buffer, data: Buffer, encrypt: boolean, inPlace = false): Buffer {
  const x = inPlace && !(data.byteOffset & 3) ? data : aligned(data);
  xorInto(x, mask);
  let y = ecb(key.cipher, key.dataKey, x, encrypt);
  if (y.byteOffset & 3) y = aligned(y);
  xorInto(y, mask);
  return y;
}

function xtsOne(key: XtsKey, tweak: Uint8Array, data: Uint8Array, encrypt: boolean): Buffer {
  if (tweak.length !== 16) throw new CryptoError(`XTS: tweak must be 16 bytes, got ${tweak.length}`);
  if (data.length < BLOCK) throw new CryptoError(`XTS: data unit of ${data.length} bytes is shorter than one block (16)`);
  const m = Math.floor(data.length / BLOCK);
  const s = data.length % BLOCK;
  const t0 = ecb(key.cipher, key.tweakKey, aligned(tweak), true);
  const mk = masks(t0, m + 1);
  const mask = (j: number): Buffer => mk.subarray(j * BLOCK, (j + 1) * BLOCK);
  if (s === 0) return xex(key, mk.subarray(0, m * BLOCK), Buffer.from(data), encrypt);
  // Ciphertext stealing over the last full block and the partial block.
  const head = m > 1 ? xex(key, mk.subarray(0, (m - 1) * BLOCK), Buffer.from(data.subarray(0, (m - 1) * BLOCK)), encrypt) : Buffer.alloc(0);
  const last = Buffer.from(data.subarray((m - 1) * BLOCK, m * BLOCK));
  const tail = Buffer.from(data.subarray(m * BLOCK));
  const [first, second] = encrypt ? [m - 1, m] : [m, m - 1];
  const cc = xex(key, mask(first), last, encrypt);
  const stolen = Buffer.concat([tail, cc.subarray(s)]);
  const penult = xex(key, mask(second), stolen, encrypt);
  return Buffer.concat([head, penult, cc.subarray(0, s)]);
}

/** XTS-encrypts one data unit (≥ 16 bytes; ciphertext stealing for partial final blocks). */
export function xtsEncrypt(key: XtsKey, tweak: Uint8Array, data: Uint8Array): Buffer {
  return xtsOne(key, tweak, data, true);
}

export function xtsDecrypt(key: XtsKey, tweak: Uint8Array, data: Uint8Array): Buffer {
  return xtsOne(key, tweak, data, false);
}

/** Node's own aes-128-xts/aes-256-xts for one data unit (AES only; OpenSSL 3 refuses Key1 = Key2). */
export function nodeXts(key: XtsKey, tweak: Uint8Array, data: Uint8Array, encrypt: boolean): Buffer {
  if (key.cipher === 'sm4') throw new CryptoError('node has no sm4-xts; use xtsEncrypt/xtsDecrypt');
  const name = `${key.cipher}-xts`;
  const k = Buffer.concat([key.dataKey, key.tweakKey]);
  const c = encrypt ? createCipheriv(name, k, tweak) : createDecipheriv(name, k, tweak);
  return Buffer.concat([c.update(data), c.final()]);
}

export interface PageCryptOptions {
  /** Data-unit size: 4096 (default, one page) or 512. */
  unitSize?: number;
  /** 'auto' (default): node's native aes-xts for AES, our XTS-over-ECB for SM4. */
  engine?: 'auto' | 'generic' | 'node';
}

/**
 * Encrypts or decrypts a run of whole data units starting at physical byte address `address`;
 * unit i is tweaked with address + i·unitSize.
 */
export function xtsCryptPages(key: XtsKey, address: bigint | number, data: Uint8Array, encrypt: boolean, opts: PageCryptOptions = {}): Buffer {
  const unit = opts.unitSize ?? PAGE_SIZE;
  if (unit !== 4096 && unit !== 512) throw new CryptoError(`XTS data unit must be 512 or 4096 bytes, got ${unit}`);
  const base = BigInt(address);
  if (base % BigInt(unit) !== 0n) throw new CryptoError(`XTS: address 0x${base.toString(16)} is not aligned to the ${unit}-byte data unit`);
  if (data.length % unit !== 0) throw new CryptoError(`XTS: ${data.length} bytes is not a whole number of ${unit}-byte data units`);
  const engine = opts.engine === 'node' || (opts.engine !== 'generic' && key.cipher !== 'sm4') ? 'node' : 'generic';
  const out = Buffer.allocUnsafe(data.length);
  if (engine === 'node') {
    if (key.cipher === 'sm4') throw new CryptoError('node has no sm4-xts; use the generic engine');
    // One cipher object per data unit is inherent to the API; keep everything else out of the loop.
    const name = `${key.cipher}-xts`;
    const k = Buffer.concat([key.dataKey, key.tweakKey]);
    const tweak = tweakFor(base);
    let lo = base & 0xffff_ffff_ffff_ffffn;
    const hi = base >> 64n;
    for (let off = 0; off < data.length; off += unit, lo += BigInt(unit)) {
      tweak.writeBigUInt64LE(lo & 0xffff_ffff_ffff_ffffn, 0);
      tweak.writeBigUInt64LE(hi + (lo >> 64n), 8);
      const c = encrypt ? createCipheriv(name, k, tweak) : createDecipheriv(name, k, tweak);
      out.set(c.update(data.subarray(off, off + unit)), off);
    }
    return out;
  }
  const blocksPerUnit = unit / BLOCK;
  for (let off = 0; off < data.length; off += CHUNK_UNITS_BYTES) {
    const len = Math.min(CHUNK_UNITS_BYTES, data.length - off);
    const units = len / unit;
    const tw = Buffer.alloc(units * BLOCK);
    for (let u = 0; u < units; u++) tweakFor(base + BigInt(off + u * unit)).copy(tw, u * BLOCK);
    const mk = masks(aligned(ecb(key.cipher, key.tweakKey, tw, true)), blocksPerUnit);
    xex(key, mk, aligned(data.subarray(off, off + len)), encrypt, true).copy(out, off);
  }
  return out;
}
