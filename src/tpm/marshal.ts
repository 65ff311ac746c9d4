import { TpmProtocolError } from './errors.js';

/**
 * Bounds-checked big-endian reader over TPM wire bytes. Every overrun throws a
 * TpmProtocolError naming the field and the absolute byte offset.
 */
export class TpmReader {
  private pos: number;
  private readonly end: number;

  /**
   * @param what name of the whole buffer for messages (e.g. "TPM2_Quote response")
   * @param base absolute offset of buf[0] inside the enclosing message, for messages
   */
  constructor(
    readonly buf: Uint8Array,
    readonly what = 'TPM data',
    readonly base = 0,
  ) {
    this.pos = 0;
    this.end = buf.length;
  }

  get offset(): number {
    return this.pos;
  }
  get remaining(): number {
    return this.end - this.pos;
  }

  fail(field: string, why: string, at = this.pos, truncated?: { need: number; left: number }): never {
    const offset = this.base + at;
    throw new TpmProtocolError(`${this.what}: ${field} at byte ${offset}: ${why}`, { parse: { what: this.what, field, offset, reason: why, ...(truncated ? { truncated } : {}) } });
  }

  private need(n: number, field: string): void {
    const left = this.end - this.pos;
    if (n > left) this.fail(field, `needs ${n} byte(s), only ${left} left`, this.pos, { need: n, left });
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }
  u16(field: string): number {
    this.need(2, field);
    const v = (this.buf[this.pos]! << 8) | this.buf[this.pos + 1]!;
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const b = this.buf;
    const p = this.pos;
    const v = ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
    this.pos += 4;
    return v;
  }
  i32(field: string): number {
    return this.u32(field) | 0;
  }
  u64(field: string): bigint {
    const hi = this.u32(field);
    const lo = this.u32(field);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, n);
    this.pos += n;
    return Buffer.from(v);
  }
  /** A TPM2B: u16 size then that many bytes; size is checked against max before reading. */
  tpm2b(field: string, max: number): Buffer {
    const at = this.pos;
    const n = this.u16(`${field}.size`);
    if (n > max) this.fail(field, `size ${n} exceeds the maximum ${max}`, at);
    return this.bytes(n, field);
  }
  /** A count for a TPML: checked against max and against the bytes left (each element ≥ minElem bytes). */
  count(field: string, max: number, minElem: number): number {
    const at = this.pos;
    const n = this.u32(`${field}.count`);
    if (n > max) this.fail(field, `count ${n} exceeds the maximum ${max}`, at);
    if (n * minElem > this.remaining) this.fail(field, `count ${n} needs at least ${n * minElem} byte(s), only ${this.remaining} left`, at);
    return n;
  }
  /** A nested reader over a u16-size-prefixed structure (TPM2B holding a structure). */
  sized(field: string, max: number): TpmReader {
    const at = this.pos;
    const n = this.u16(`${field}.size`);
    if (n > max) this.fail(field, `size ${n} exceeds the maximum ${max}`, at);
    this.need(n, field);
    const sub = new TpmReader(this.buf.subarray(this.pos, this.pos + n), this.what, this.base + this.pos);
    this.pos += n;
    return sub;
  }
  /** The rest of the buffer. */
  rest(): Buffer {
    return this.bytes(this.remaining, 'rest');
  }
  /** Throws when bytes are left over (structures must be consumed exactly). */
  done(field: string): void {
    if (this.pos !== this.end) this.fail(field, `${this.end - this.pos} unexpected trailing byte(s)`);
  }
}

/** Growable big-endian writer for TPM wire bytes. */
export class TpmWriter {
  private buf: Buffer;
  private len = 0;

  constructor(initial = 256) {
    this.buf = Buffer.alloc(initial);
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  get length(): number {
    return this.len;
  }

  u8(v: number): this {
    this.room(1);
    this.buf[this.len++] = v & 0xff;
    return this;
  }
  u16(v: number): this {
    this.room(2);
    this.buf.writeUInt16BE(v & 0xffff, this.len);
    this.len += 2;
    return this;
  }
  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.len);
    this.len += 4;
    return this;
  }
  i32(v: number): this {
    this.room(4);
    this.buf.writeInt32BE(v | 0, this.len);
    this.len += 4;
    return this;
  }
  u64(v: bigint): this {
    this.room(8);
    this.buf.writeBigUInt64BE(BigInt.asUintN(64, v), this.len);
    this.len += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }
  /** u16 size then bytes. */
  tpm2b(b: Uint8Array = Buffer.alloc(0)): this {
    if (b.length > 0xffff) throw new TpmProtocolError(`TPM2B of ${b.length} bytes does not fit a 16-bit size`);
    return this.u16(b.length).bytes(b);
  }
  /** A structure wrapped in a u16 size (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, …). */
  sized(fill: (w: TpmWriter) => void): this {
    const inner = new TpmWriter();
    fill(inner);
    return this.tpm2b(inner.finish());
  }
  /** Patches a u32 at an earlier offset (command size). */
  patchU32(offset: number, v: number): this {
    this.buf.writeUInt32BE(v >>> 0, offset);
    return this;
  }
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }
}

/** Marshals with a writer callback and returns the bytes. */
export function marshal(fill: (w: TpmWriter) => void): Buffer {
  const w = new TpmWriter();
  fill(w);
  return w.finish();
}

/** Unmarshals bytes that must hold exactly one structure. */
export function unmarshalExact<T>(bytes: Uint8Array, what: string, read: (r: TpmReader) => T): T {
  const r = new TpmReader(bytes, what);
  const v = read(r);
  r.done(what);
  return v;
}
