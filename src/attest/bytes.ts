import { AttestError } from './errors.js';

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict hex decode; `what` names the field in the error. */
export function fromHex(s: string, what: string): Buffer {
  const t = s.startsWith('0x') ? s.slice(2) : s;
  if (!HEX_RE.test(t)) throw new AttestError(`${what}: not an even-length hex string`);
  return Buffer.from(t, 'hex');
}

/** Strict base64 decode (standard alphabet, padding optional). */
export function fromB64(s: string, what: string): Buffer {
  if (!B64_RE.test(s) || s.length % 4 === 1) throw new AttestError(`${what}: not base64`);
  return Buffer.from(s, 'base64');
}

export function u32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
