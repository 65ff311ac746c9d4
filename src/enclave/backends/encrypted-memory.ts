import { PAGE_SIZE, type XtsKey } from '../../crypto/xts.js';
import { BackendError } from './errors.js';
import { cryptPages } from './page-cipher.js';

/**
 * Guest DRAM as the memory controller stores it: ciphertext under one XTS key, with the page's
 * address as tweak (`tweakBase` + gpa: GPA for SEV/CSV, host PA for MKTME). `key === null` is
 * unencrypted memory.
 */
export class EncryptedMemory {
  readonly dram: Buffer;

  constructor(
    readonly size: number,
    private readonly tweakBase = 0,
  ) {
    if (!Number.isInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) throw new BackendError(`guest memory size ${size} is not a positive multiple of 4 KiB`);
    if (!Number.isSafeInteger(tweakBase + size) || tweakBase < 0 || tweakBase % PAGE_SIZE !== 0) throw new BackendError(`guest memory tweak base ${tweakBase} is not a 4 KiB-aligned address below 2^53`);
    this.dram = Buffer.alloc(size);
  }

  private check(gpa: number, length: number, what: string): void {
    if (!Number.isInteger(gpa) || !Number.isInteger(length) || gpa < 0 || length < 0 || gpa + length > this.size)
      throw new BackendError(`${what}: range 0x${gpa.toString(16)}+0x${length.toString(16)} outside guest memory (0x${this.size.toString(16)} bytes)`);
  }

  /** Decrypts [gpa, gpa+length) with `key` (the memory controller reading for the key's owner). */
  read(key: XtsKey | null, gpa: number, length: number, what = 'read'): Buffer {
    this.check(gpa, length, what);
    if (length === 0) return Buffer.alloc(0);
    const start = Math.floor(gpa / PAGE_SIZE) * PAGE_SIZE;
    const end = Math.ceil((gpa + length) / PAGE_SIZE) * PAGE_SIZE;
    const raw = this.dram.subarray(start, end);
    const plain = key ? Buffer.allocUnsafe(end - start) : Buffer.from(raw);
    if (key) cryptPages(key, this.tweakBase + start, raw, plain, false);
    return plain.subarray(gpa - start, gpa - start + length);
  }

  /** Encrypts `plaintext` with `key` into [gpa, …) (read-modify-write of partial pages). */
  write(key: XtsKey | null, gpa: number, plaintext: Uint8Array, what = 'write'): void {
    this.check(gpa, plaintext.length, what);
    if (plaintext.length === 0) return;
    const start = Math.floor(gpa / PAGE_SIZE) * PAGE_SIZE;
    const end = Math.ceil((gpa + plaintext.length) / PAGE_SIZE) * PAGE_SIZE;
    let pages: Uint8Array;
    if (start === gpa && end === gpa + plaintext.length) pages = plaintext;
    else {
      const buf = this.read(key, start, end - start, what);
      buf.set(plaintext, gpa - start);
      pages = buf;
    }
    // Straight into DRAM: no temporary the size of the write.
    if (key) cryptPages(key, this.tweakBase + start, pages, this.dram.subarray(start, end), true);
    else this.dram.set(pages, start);
  }

  /** Raw DRAM bytes (ciphertext) as the host or a physical attacker sees them. */
  raw(gpa: number, length: number): Buffer {
    this.check(gpa, length, 'host read');
    return Buffer.from(this.dram.subarray(gpa, gpa + length));
  }

  setRaw(gpa: number, bytes: Uint8Array): void {
    this.check(gpa, bytes.length, 'host write');
    this.dram.set(bytes, gpa);
  }

  /** Scrub on teardown. */
  wipe(): void {
    this.dram.fill(0);
  }
}
