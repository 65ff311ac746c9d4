import { createCipheriv, createDecipheriv } from 'node:crypto';
import { PAGE_SIZE, type XtsKey } from '../../crypto/xts.js';
import { BackendError } from './errors.js';

/**
 * Bulk XTS over many 4 KiB pages for the memory-encryption models, byte-identical to
 * `xtsCryptPages`/`xtsEncrypt` page by page (data unit = one page, tweak = the page's address,
 * 128-bit little-endian), but writing straight into the caller's buffer (guest DRAM), so a
 * 64 MiB access makes no 64 MiB temporary.
 *
 * How it is fast, from measurements on 64 MiB (docs/memory-encryption.md):
 * - AES: OpenSSL's aes-xts per page. Node cannot change the tweak of a cipher object, so each
 *   page needs its own (createCipheriv ≈ 1.1 µs against ≈ 2 µs for update of the 4 KiB);
 *   XTS over one aes-ecb call for all pages was measured as fast as this, not faster, because
 *   the tweak masks then cost two JavaScript passes over the data.
 * - SM4 (no sm4-xts in OpenSSL 3.0): XTS over sm4-ecb, one ECB call per chunk of pages for the
 *   data and one for all the chunk's tweaks; the masks T·α^j are made on the fly in two fused
 *   passes. SM4 itself dominates.
 */

/** Where the pages of a run live: the address of the first of contiguous pages, or one address per page. */
export type PageAddresses = number | readonly number[];

const BLOCK = 16;
const WORDS_PER_PAGE = PAGE_SIZE / 4;
/** Pages per ECB call on the SM4 path: 64 KiB stays in cache between the passes. */
const CHUNK_PAGES = 16;

function addressOf(addresses: PageAddresses, page: number): number {
  return typeof addresses === 'number' ? addresses + page * PAGE_SIZE : addresses[page]!;
}

function check(addresses: PageAddresses, src: Uint8Array, dst: Uint8Array): number {
  if (src.length !== dst.length) throw new BackendError(`page cipher: source is ${src.length} bytes, destination ${dst.length}`);
  if (src.length % PAGE_SIZE !== 0) throw new BackendError(`page cipher: ${src.length} bytes is not a whole number of 4 KiB pages`);
  const pages = src.length / PAGE_SIZE;
  if (typeof addresses !== 'number' && addresses.length !== pages) throw new BackendError(`page cipher: ${addresses.length} page addresses for ${pages} pages`);
  const toCheck = typeof addresses === 'number' ? [addresses, addresses + src.length] : addresses;
  for (const a of toCheck)
    if (!Number.isSafeInteger(a) || a < 0 || a % PAGE_SIZE !== 0) throw new BackendError(`page cipher: page address ${a} is not a 4 KiB-aligned address below 2^53`);
  return pages;
}

/** Writes the XTS tweak of the page at `address` (< 2^53) as 16 little-endian bytes. */
function writeTweak(out: Buffer, at: number, address: number): void {
  out.writeUInt32LE(address % 0x1_0000_0000, at);
  out.writeUInt32LE(Math.floor(address / 0x1_0000_0000), at + 4);
  out.writeUInt32LE(0, at + 8);
  out.writeUInt32LE(0, at + 12);
}

/**
 * dst = src ⊕ T_j block by block over whole pages, T_0 of page u at words 4u..4u+3 of `t0s`,
 * T_{j+1} = T_j·α in GF(2^128) (IEEE 1619 little-endian convention).
 */
function maskPages(src: Uint32Array, dst: Uint32Array, t0s: Uint32Array, pages: number): void {
  for (let u = 0, w = 0; u < pages; u++) {
    let a0 = t0s[u * 4]!;
    let a1 = t0s[u * 4 + 1]!;
    let a2 = t0s[u * 4 + 2]!;
    let a3 = t0s[u * 4 + 3]!;
    for (const end = w + WORDS_PER_PAGE; w < end; w += 4) {
      dst[w] = src[w]! ^ a0;
      dst[w + 1] = src[w + 1]! ^ a1;
      dst[w + 2] = src[w + 2]! ^ a2;
      dst[w + 3] = src[w + 3]! ^ a3;
      const carry = (a3 >> 31) & 0x87;
      a3 = (a3 << 1) | (a2 >>> 31);
      a2 = (a2 << 1) | (a1 >>> 31);
      a1 = (a1 << 1) | (a0 >>> 31);
      a0 = (a0 << 1) ^ carry;
    }
  }
}

const words = (b: Uint8Array): Uint32Array => new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);

/** A 4-byte-aligned view of `b` (a copy when it is not aligned), for Uint32Array access. */
function alignedWords(b: Uint8Array): Uint32Array {
  if ((b.byteOffset & 3) === 0) return words(b);
  const c = new Uint8Array(b.length);
  c.set(b);
  return words(c);
}

function ecb(cipher: string, key: Buffer, encrypt: boolean): { update(b: Uint8Array): Buffer } {
  const c = encrypt ? createCipheriv(`${cipher}-ecb`, key, null) : createDecipheriv(`${cipher}-ecb`, key, null);
  c.setAutoPadding(false);
  return c;
}

function xtsOverEcb(key: XtsKey, addresses: PageAddresses, src: Uint8Array, dst: Uint8Array, pages: number, encrypt: boolean): void {
  const tweakCipher = ecb(key.cipher, key.tweakKey, true);
  const dataCipher = ecb(key.cipher, key.dataKey, encrypt);
  const tweaks = Buffer.alloc(CHUNK_PAGES * BLOCK);
  const x = new Uint8Array(CHUNK_PAGES * PAGE_SIZE);
  const dstAligned = (dst.byteOffset & 3) === 0;
  for (let first = 0; first < pages; first += CHUNK_PAGES) {
    const n = Math.min(CHUNK_PAGES, pages - first);
    const bytes = n * PAGE_SIZE;
    for (let u = 0; u < n; u++) writeTweak(tweaks, u * BLOCK, addressOf(addresses, first + u));
    const t0s = alignedWords(tweakCipher.update(tweaks.subarray(0, n * BLOCK)));
    const xs = x.subarray(0, bytes);
    maskPages(alignedWords(src.subarray(first * PAGE_SIZE, first * PAGE_SIZE + bytes)), words(xs), t0s, n);
    const y = alignedWords(dataCipher.update(xs));
    const out = dst.subarray(first * PAGE_SIZE, first * PAGE_SIZE + bytes);
    if (dstAligned) maskPages(y, words(out), t0s, n);
    else {
      maskPages(y, words(xs), t0s, n);
      out.set(xs);
    }
  }
}

function xtsPerPage(key: XtsKey, addresses: PageAddresses, src: Uint8Array, dst: Uint8Array, pages: number, encrypt: boolean): void {
  const name = `${key.cipher}-xts`;
  const keyBytes = Buffer.concat([key.dataKey, key.tweakKey]);
  const tweak = Buffer.alloc(BLOCK);
  for (let i = 0, off = 0; i < pages; i++, off += PAGE_SIZE) {
    writeTweak(tweak, 0, addressOf(addresses, i));
    const c = encrypt ? createCipheriv(name, keyBytes, tweak) : createDecipheriv(name, keyBytes, tweak);
    dst.set(c.update(src.subarray(off, off + PAGE_SIZE)), off);
  }
}

/** Whether writing dst while reading src could overwrite source bytes not yet read. */
function overlapsShifted(src: Uint8Array, dst: Uint8Array): boolean {
  if (src.buffer !== dst.buffer || src.byteOffset === dst.byteOffset) return false;
  return src.byteOffset < dst.byteOffset + dst.length && dst.byteOffset < src.byteOffset + src.length;
}

export interface PageCipherOptions {
  /** 'auto' (default): OpenSSL's xts for AES, XTS over ECB for SM4; 'ecb' forces XTS over ECB (AES too). */
  engine?: 'auto' | 'ecb';
}

/**
 * Encrypts (or decrypts) whole pages of `src` into `dst` (same length; may be the same bytes):
 * page i is one XTS data unit with tweak = its address (`addresses + i·4096`, or `addresses[i]`).
 */
export function cryptPages(key: XtsKey, addresses: PageAddresses, src: Uint8Array, dst: Uint8Array, encrypt: boolean, opts: PageCipherOptions = {}): void {
  const pages = check(addresses, src, dst);
  if (pages === 0) return;
  const input = overlapsShifted(src, dst) ? Uint8Array.from(src) : src;
  if (key.cipher === 'sm4' || opts.engine === 'ecb') xtsOverEcb(key, addresses, input, dst, pages, encrypt);
  else xtsPerPage(key, addresses, input, dst, pages, encrypt);
}

/** `cryptPages` into a new buffer. */
export function cryptPagesCopy(key: XtsKey, addresses: PageAddresses, src: Uint8Array, encrypt: boolean, opts: PageCipherOptions = {}): Buffer {
  const out = Buffer.allocUnsafe(src.length);
  cryptPages(key, addresses, src, out, encrypt, opts);
  return out;
}
