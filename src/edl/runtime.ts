import { EXIT } from '../errors.js';
import { EdlError, type EdlType, typeText } from './parse.js';

/**
 * The host side of the EDL encoding (docs/edl.md), used by the generated TypeScript stubs:
 * u32 / u64 little-endian, bool one byte 0 or 1, bytes[N] / string[N] a u32 length ≤ N then the
 * bytes (UTF-8 for strings), list<T, N> a u32 count ≤ N then the elements. Every decode checks
 * each length against its bound and against what is left before using it, and refuses trailing
 * bytes; every problem is an EdlError naming the call and the field.
 */

export type EdlValue = number | bigint | boolean | Buffer | string | EdlValue[];

/** Decode problems, as the enclave stubs report them too (code = 0x40 << 24 | kind << 16 | field). */
export const DECODE_KINDS: Record<number, string> = { 1: 'truncated', 2: 'longer than its bound', 3: 'not a bool (0 or 1)', 4: 'not UTF-8', 5: 'trailing bytes after the last field' };
/** The field number the enclave reports for a call's result. */
export const RESULT_FIELD = 255;
/** The field number of "trailing bytes after the last field". */
export const END_FIELD = 254;
export const ECALL_INPUT_ERROR = 0x40;
export const OCALL_ANSWER_ERROR = 0x41;

function decodeError(where: string, kind: number, detail: string): EdlError {
  return new EdlError(`${where}: ${DECODE_KINDS[kind]} (${detail})`, 'ERR_EDL_DECODE', EXIT.BAD_INPUT);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function encodeValue(t: EdlType, v: unknown, where: string, parts: Buffer[]): void {
  const bad = (what: string) => new EdlError(`${where}: expected ${typeText(t)}, got ${what}`, 'ERR_EDL_ENCODE', EXIT.BAD_INPUT);
  switch (t.kind) {
    case 'u32': {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw bad(String(v));
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v);
      parts.push(b);
      return;
    }
    case 'u64': {
      if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) throw bad(String(v));
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(v);
      parts.push(b);
      return;
    }
    case 'bool':
      if (typeof v !== 'boolean') throw bad(typeof v);
      parts.push(Buffer.from([v ? 1 : 0]));
      return;
    case 'bytes':
    case 'string': {
      let b: Buffer;
      if (t.kind === 'string') {
        if (typeof v !== 'string') throw bad(typeof v);
        b = Buffer.from(v, 'utf8');
        if (b.toString('utf8') !== v) throw bad('a string that is not valid UTF-16 (lone surrogate)');
      } else {
        if (!(v instanceof Uint8Array)) throw bad(typeof v);
        b = Buffer.from(v);
      }
      if (b.length > t.max) throw new EdlError(`${where}: ${b.length} bytes, more than its bound ${t.max}`, 'ERR_EDL_TOO_LONG', EXIT.BAD_INPUT);
      const h = Buffer.alloc(4);
      h.writeUInt32LE(b.length);
      parts.push(h, b);
      return;
    }
    case 'list': {
      if (!Array.isArray(v)) throw bad(typeof v);
      if (v.length > t.max) throw new EdlError(`${where}: ${v.length} elements, more than its bound ${t.max}`, 'ERR_EDL_TOO_LONG', EXIT.BAD_INPUT);
      const h = Buffer.alloc(4);
      h.writeUInt32LE(v.length);
      parts.push(h);
      v.forEach((x, i) => encodeValue(t.elem, x, `${where}[${i}]`, parts));
      return;
    }
  }
}

export class Reader {
  off = 0;
  constructor(
    readonly buf: Buffer,
    readonly where: string,
  ) {}
  private take(n: number, field: string): Buffer {
    if (n > this.buf.length - this.off) throw decodeError(`${this.where} field "${field}"`, 1, `needs ${n} bytes at offset ${this.off}, ${this.buf.length - this.off} left`);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  value(t: EdlType, field: string): EdlValue {
    switch (t.kind) {
      case 'u32':
        return this.take(4, field).readUInt32LE();
      case 'u64':
        return this.take(8, field).readBigUInt64LE();
      case 'bool': {
        const at = this.off;
        const b = this.take(1, field)[0]!;
        if (b > 1) throw decodeError(`${this.where} field "${field}"`, 3, `byte ${b} at offset ${at}`);
        return b === 1;
      }
      case 'bytes':
      case 'string': {
        const at = this.off;
        const n = this.take(4, field).readUInt32LE();
        if (n > t.max) throw decodeError(`${this.where} field "${field}"`, 2, `length ${n} at offset ${at}, bound ${t.max}`);
        // Copied: the result never aliases the buffer it was decoded from.
        const b = Buffer.from(this.take(n, field));
        if (t.kind === 'bytes') return b;
        try {
          return utf8.decode(b);
        } catch {
          throw decodeError(`${this.where} field "${field}"`, 4, `${n} bytes at offset ${at + 4}`);
        }
      }
      case 'list': {
        const at = this.off;
        const n = this.take(4, field).readUInt32LE();
        if (n > t.max) throw decodeError(`${this.where} field "${field}"`, 2, `count ${n} at offset ${at}, bound ${t.max}`);
        const out: EdlValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(t.elem, `${field}[${i}]`));
        return out;
      }
    }
  }
  end(): void {
    if (this.off !== this.buf.length) throw decodeError(this.where, 5, `${this.buf.length - this.off} bytes at offset ${this.off}`);
  }
}

export function encodeParams(params: readonly { name: string; type: EdlType }[], values: readonly unknown[], where: string): Buffer {
  const parts: Buffer[] = [];
  params.forEach((p, i) => encodeValue(p.type, values[i], `${where} parameter "${p.name}"`, parts));
  return Buffer.concat(parts);
}

export function decodeParams(params: readonly { name: string; type: EdlType }[], input: Buffer, where: string): EdlValue[] {
  const r = new Reader(input, where);
  const out = params.map((p) => r.value(p.type, p.name));
  r.end();
  return out;
}

export function encodeResult(t: EdlType | null, v: unknown, where: string): Buffer {
  if (t === null) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  encodeValue(t, v, `${where} result`, parts);
  return Buffer.concat(parts);
}

export function decodeResult(t: EdlType | null, output: Buffer, where: string): EdlValue | undefined {
  const r = new Reader(output, where);
  const v = t === null ? undefined : r.value(t, 'result');
  r.end();
  return v;
}

/** An OCALL table as the host APIs take it (src/hypervisor/addon.ts OcallTable): index → handler; a throw fails the OCALL. */
export type EdlOcallTable = Readonly<Record<number, (input: Buffer) => Buffer>>;

/** What a caller of the generated stubs provides: one ECALL with the interface's OCALL table. */
export type EcallTransport = (fn: number, input: Buffer, ocalls: EdlOcallTable) => Promise<{ status: number; output: Buffer }>;

/** An enclave's ECALL failure, with the error's name when the interface or the stubs define it. */
export class EnclaveCallError extends EdlError {
  constructor(
    message: string,
    code: string,
    readonly enclaveCode: number,
    exitCode: number,
  ) {
    super(message, code, exitCode);
  }
}

/** rt's error codes (hypervisor/enclaves/rt: err). */
const RT_ERRORS: Record<number, string> = { 1: 'UNKNOWN_ECALL', 2: 'BAD_INPUT', 3: 'TOO_BIG', 4: 'AUTH_FAILED', 5: 'HYPERCALL', 6: 'NO_ENTROPY', 7: 'OCALL' };

/**
 * The error an ECALL status (0x8000_0000 | code) stands for. `errors` are the interface's own
 * (name → code); `fields` the ECALL's parameter names; `ocallNames` index → name.
 */
export function statusError(status: number, where: string, errors: Readonly<Record<string, number>>, fields: readonly string[], ocallNames: Readonly<Record<number, { name: string; fields: readonly string[] }>>, exitFor: (name: string) => number = () => EXIT.INTERNAL): EnclaveCallError {
  const code = status & 0x7fff_ffff;
  const top = code >>> 24;
  if (top === ECALL_INPUT_ERROR || top === OCALL_ANSWER_ERROR) {
    const kind = (code >>> 16) & 0xff;
    const field = code & 0xff;
    const what = (names: readonly string[] | undefined) =>
      `${field === END_FIELD ? '' : `field "${field === RESULT_FIELD ? 'result' : (names?.[field] ?? `#${field}`)}" `}${DECODE_KINDS[kind] ?? `problem ${kind}`}`;
    if (top === ECALL_INPUT_ERROR) return new EnclaveCallError(`${where}: the enclave refused its input: ${what(fields)}`, 'ERR_EDL_DECODE', code, EXIT.BAD_INPUT);
    const oc = ocallNames[(code >>> 8) & 0xff];
    return new EnclaveCallError(`${where}: the enclave refused the host's answer to OCALL ${oc?.name ?? (code >>> 8) & 0xff}: ${what(oc?.fields)}`, 'ERR_EDL_OCALL_ANSWER', code, EXIT.INTERNAL);
  }
  const named = Object.entries(errors).find(([, c]) => c === code)?.[0];
  if (named) return new EnclaveCallError(`${where}: ${named.replace(/_/g, ' ')}`, `ERR_${named.toUpperCase()}`, code, exitFor(named));
  const rt = RT_ERRORS[code];
  return new EnclaveCallError(`${where}: the enclave returned ${rt ?? `error code ${code}`}`, rt ? `ERR_ENCLAVE_${rt}` : 'ERR_ENCLAVE_STATUS', code, rt === 'BAD_INPUT' || rt === 'TOO_BIG' ? EXIT.BAD_INPUT : EXIT.INTERNAL);
}
