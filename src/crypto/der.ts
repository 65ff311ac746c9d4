import { CryptoError } from './errors.js';

/** Minimal DER (X.690) reader/writer: just what SM2 keys and signatures need. */

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  SEQUENCE: 0x30,
} as const;

export interface DerNode {
  tag: number;
  /** Offset of the tag byte in the outermost buffer. */
  offset: number;
  /** Content bytes (a view into the input). */
  value: Buffer;
  /** Total encoded length (tag + length + content). */
  length: number;
}

/** Reads one TLV at `pos` of `buf`; `base` is added to offsets in error messages. */
export function readTlv(buf: Buffer, pos: number, what: string, base = 0): DerNode {
  const at = base + pos;
  if (pos + 2 > buf.length) throw new CryptoError(`${what}: DER truncated at byte ${at}`);
  const tag = buf[pos]!;
  let len = buf[pos + 1]!;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new CryptoError(`${what}: unsupported DER length form 0x${len.toString(16)} at byte ${at + 1}`);
    if (pos + 2 + n > buf.length) throw new CryptoError(`${what}: DER length truncated at byte ${at + 1}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + 2 + i]!;
    if (len < 0x80 || (n > 1 && buf[pos + 2] === 0)) throw new CryptoError(`${what}: non-minimal DER length at byte ${at + 1}`);
    hdr += n;
  }
  if (pos + hdr + len > buf.length) throw new CryptoError(`${what}: DER value of ${len} bytes at byte ${at} runs past the end (${buf.length - pos - hdr} left)`);
  return { tag, offset: at, value: buf.subarray(pos + hdr, pos + hdr + len), length: hdr + len };
}

/** Reads exactly one TLV with the expected tag spanning the whole buffer. */
export function readSingle(buf: Buffer, tag: number, what: string, base = 0): DerNode {
  const n = readTlv(buf, 0, what, base);
  if (n.tag !== tag) throw new CryptoError(`${what}: expected DER tag 0x${tag.toString(16)} at byte ${base}, found 0x${n.tag.toString(16)}`);
  if (n.length !== buf.length) throw new CryptoError(`${what}: ${buf.length - n.length} trailing bytes after DER value at byte ${base + n.length}`);
  return n;
}

/** The children of a constructed value. */
export function children(node: DerNode, what: string): DerNode[] {
  const out: DerNode[] = [];
  const contentBase = node.offset + (node.length - node.value.length);
  let pos = 0;
  while (pos < node.value.length) {
    const c = readTlv(node.value, pos, what, contentBase);
    out.push(c);
    pos += c.length;
  }
  return out;
}

export function expectTag(node: DerNode | undefined, tag: number, what: string): DerNode {
  if (!node) throw new CryptoError(`${what}: missing DER element (tag 0x${tag.toString(16)})`);
  if (node.tag !== tag) throw new CryptoError(`${what}: expected DER tag 0x${tag.toString(16)} at byte ${node.offset}, found 0x${node.tag.toString(16)}`);
  return node;
}

/** A non-negative DER INTEGER as bigint. */
export function derUint(node: DerNode, what: string): bigint {
  expectTag(node, TAG.INTEGER, what);
  const v = node.value;
  if (v.length === 0) throw new CryptoError(`${what}: empty INTEGER at byte ${node.offset}`);
  if (v[0]! & 0x80) throw new CryptoError(`${what}: negative INTEGER at byte ${node.offset}`);
  if (v.length > 1 && v[0] === 0 && !(v[1]! & 0x80)) throw new CryptoError(`${what}: non-minimal INTEGER at byte ${node.offset}`);
  return v.length === 0 ? 0n : BigInt('0x' + v.toString('hex'));
}

export function encodeTlv(tag: number, value: Buffer): Buffer {
  const len = value.length;
  let hdr: Buffer;
  if (len < 0x80) hdr = Buffer.from([tag, len]);
  else {
    const bytes: number[] = [];
    for (let l = len; l > 0; l = Math.floor(l / 256)) bytes.unshift(l & 0xff);
    hdr = Buffer.from([tag, 0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([hdr, value]);
}

export function encodeUint(v: bigint): Buffer {
  if (v < 0n) throw new CryptoError('DER: cannot encode a negative INTEGER');
  let hex = v.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  let b = Buffer.from(hex, 'hex');
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return encodeTlv(TAG.INTEGER, b);
}

export function encodeSequence(...items: Buffer[]): Buffer {
  return encodeTlv(TAG.SEQUENCE, Buffer.concat(items));
}

export function encodeOid(oid: string): Buffer {
  const parts = oid.split('.').map((p) => BigInt(p));
  if (parts.length < 2) throw new CryptoError(`DER: bad OID ${oid}`);
  const out: number[] = [Number(parts[0]! * 40n + parts[1]!)];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [];
    let v = p;
    do {
      chunk.unshift(Number(v & 0x7fn));
      v >>= 7n;
    } while (v > 0n);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    out.push(...chunk);
  }
  return encodeTlv(TAG.OID, Buffer.from(out));
}

export function decodeOid(node: DerNode, what: string): string {
  expectTag(node, TAG.OID, what);
  const v = node.value;
  if (v.length === 0) throw new CryptoError(`${what}: empty OID at byte ${node.offset}`);
  const parts: bigint[] = [];
  let acc = 0n;
  for (let i = 0; i < v.length; i++) {
    acc = (acc << 7n) | BigInt(v[i]! & 0x7f);
    if (!(v[i]! & 0x80)) {
      parts.push(acc);
      acc = 0n;
    }
  }
  const first = parts.shift()!;
  const a = first < 80n ? first / 40n : 2n;
  return [a, first - a * 40n, ...parts].join('.');
}

/** PEM armour: returns the DER of the first block with `label` (any label when omitted). */
export function pemDecode(text: string, what: string, labels?: string[]): { label: string; der: Buffer } {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) throw new CryptoError(`${what}: no PEM block found`);
  const label = m[1]!;
  if (labels && !labels.includes(label)) throw new CryptoError(`${what}: PEM label "${label}" not one of ${labels.join(', ')}`);
  const body = m[2]!.replace(/[\r\n\t ]/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw new CryptoError(`${what}: PEM body is not base64`);
  return { label, der: Buffer.from(body, 'base64') };
}

export function pemEncode(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}
