import { readFileSync } from 'node:fs';
import { type ImageArch, ARCH_CODE } from '../measure/container.js';
import { TxtError } from './registers.js';
import { readFileBounded } from '../fs/bounded-read.js';

/**
 * The emulated platform's SINIT analogue ("launch environment", HELENV v1): what the chipset
 * hashes at locality 4 (HASH_START/DATA/END) before the MLE runs. A 64-byte little-endian
 * header and an opaque payload (e.g. an ACM-like blob, or nothing):
 *   0x00 8  magic "HELENV\0\0"      0x08 2 format version (1)   0x0a 2 header size (64)
 *   0x0c 4  payload length          0x10 4 environment version  0x14 1 arch (as HEIMG)
 *   0x15 11 reserved (0)            0x20 32 name (UTF-8, zero-padded)
 */
export const LE_MAGIC = Buffer.from('HELENV\0\0', 'latin1');
export const LE_HEADER_SIZE = 64;
export const LE_MAX_PAYLOAD = 16 * 1024 * 1024;

export interface LaunchEnvironment {
  name: string;
  version: number;
  arch: ImageArch;
  payload: Buffer;
}

export function buildLaunchEnvironment(le: LaunchEnvironment): Buffer {
  const name = Buffer.from(le.name, 'utf8');
  if (name.length === 0 || name.length > 32) throw new TxtError(`launch environment: name must be 1..32 bytes, got ${name.length}`);
  if (le.payload.length > LE_MAX_PAYLOAD) throw new TxtError(`launch environment: payload of ${le.payload.length} bytes exceeds ${LE_MAX_PAYLOAD}`);
  const h = Buffer.alloc(LE_HEADER_SIZE);
  LE_MAGIC.copy(h, 0);
  h.writeUInt16LE(1, 8);
  h.writeUInt16LE(LE_HEADER_SIZE, 10);
  h.writeUInt32LE(le.payload.length, 12);
  h.writeUInt32LE(le.version >>> 0, 16);
  h[20] = ARCH_CODE[le.arch];
  name.copy(h, 32);
  return Buffer.concat([h, le.payload]);
}

export function parseLaunchEnvironment(buf: Buffer, expectedArch?: ImageArch): LaunchEnvironment {
  if (buf.length < LE_HEADER_SIZE) throw new TxtError(`launch environment: truncated: ${buf.length} bytes, the header needs ${LE_HEADER_SIZE}`);
  if (!buf.subarray(0, 8).equals(LE_MAGIC)) throw new TxtError(`launch environment: bad magic at offset 0x0: ${buf.subarray(0, 8).toString('hex')}, expected ${LE_MAGIC.toString('hex')}`);
  if (buf.readUInt16LE(8) !== 1) throw new TxtError(`launch environment: unsupported format version ${buf.readUInt16LE(8)} at offset 0x8`);
  if (buf.readUInt16LE(10) !== LE_HEADER_SIZE) throw new TxtError(`launch environment: header size ${buf.readUInt16LE(10)} at offset 0xa, expected ${LE_HEADER_SIZE}`);
  const len = buf.readUInt32LE(12);
  if (len > LE_MAX_PAYLOAD) throw new TxtError(`launch environment: payload length ${len} at offset 0xc exceeds ${LE_MAX_PAYLOAD}`);
  if (LE_HEADER_SIZE + len !== buf.length) throw new TxtError(`launch environment: payload length ${len} at offset 0xc does not match the ${buf.length}-byte file`);
  const arch = (Object.entries(ARCH_CODE) as [ImageArch, number][]).find(([, v]) => v === buf[20])?.[0];
  if (!arch) throw new TxtError(`launch environment: unknown arch code ${buf[20]} at offset 0x14`);
  if (expectedArch && arch !== expectedArch) throw new TxtError(`launch environment: built for ${arch} (offset 0x14), the platform is ${expectedArch}`);
  for (let i = 21; i < 32; i++) if (buf[i] !== 0) throw new TxtError(`launch environment: reserved byte at offset 0x${i.toString(16)} is not zero`);
  const nameBytes = buf.subarray(32, 64);
  const end = nameBytes.indexOf(0);
  return { name: nameBytes.subarray(0, end < 0 ? 32 : end).toString('utf8'), version: buf.readUInt32LE(16), arch, payload: Buffer.from(buf.subarray(LE_HEADER_SIZE)) };
}

/** Reads a launch environment file and checks its format; a refusal names the file. Returns the bytes (what is measured). */
export function readLaunchEnvironmentFile(path: string): Buffer {
  const buf = readFileBounded(path, { what: 'launch environment', kind: 'log' });
  try {
    parseLaunchEnvironment(buf);
  } catch (e) {
    if (e instanceof TxtError) e.message = e.message.replace(/^launch environment: /, `launch environment ${path}: `);
    throw e;
  }
  return buf;
}
