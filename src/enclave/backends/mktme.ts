import { randomBytes } from 'node:crypto';
import { PAGE_SIZE, type XtsKey, xtsKey } from '../../crypto/xts.js';
import { type TmeActivate, type TmeCapability, decodeTmeActivate, decodeTmeCapability } from './detect.js';
import { BackendError } from './errors.js';
import { cryptPages } from './page-cipher.js';

/**
 * Intel MKTME model: the memory controller encrypts every line with the key of the KeyID found
 * in the upper physical-address bits; KeyID 0 is the TME (platform) key. Keys are programmed
 * per KeyID with PCONFIG leaf MKTME_KEY_PROGRAM using the architectural 256-byte structure.
 * Cipher: AES-XTS-128, data unit 4 KiB, tweak = the physical address with KeyID bits stripped.
 */

export const PCONFIG_MKTME_KEY_PROGRAM = 0;
export const MKTME_CMD = { SET_KEY_DIRECT: 0, SET_KEY_RANDOM: 1, CLEAR_KEY: 2, NO_ENCRYPT: 3 } as const;
export const MKTME_ALG_AES_XTS_128 = 1 << 8;
export const MKTME_STATUS = {
  PROG_SUCCESS: 0,
  INVALID_PROG_CMD: 1,
  ENTROPY_ERROR: 2,
  INVALID_KEYID: 3,
  INVALID_ENC_ALG: 4,
  DEVICE_BUSY: 5,
} as const;
export const KEY_PROGRAM_STRUCT_SIZE = 256;

const SLAB_SIZE = 2 * 1024 * 1024;

/** Builds MKTME_KEY_PROGRAM_STRUCT: keyid u16 @0, keyid_ctrl u32 @2, reserved @6..63, key @64 (64 B), tweak key @128 (64 B), reserved @192. */
export function keyProgramStruct(keyId: number, command: number, algorithm: number, key?: Uint8Array, tweakKey?: Uint8Array): Buffer {
  const b = Buffer.alloc(KEY_PROGRAM_STRUCT_SIZE);
  b.writeUInt16LE(keyId, 0);
  b.writeUInt32LE(((command & 0xff) | (algorithm & 0xffff00)) >>> 0, 2);
  if (key) Buffer.from(key).copy(b, 64, 0, 64);
  if (tweakKey) Buffer.from(tweakKey).copy(b, 128, 0, 64);
  return b;
}

type KeyEntry = { mode: 'tme' } | { mode: 'key'; key: XtsKey } | { mode: 'plain' };

export interface MktmeOptions {
  /** Raw IA32_TME_CAPABILITY / IA32_TME_ACTIVATE values (synthetic on the emulated platform). */
  tmeCapability: bigint;
  tmeActivate: bigint;
  /** MAXPHYADDR (CPUID 0x80000008 EAX[7:0]). */
  physAddrBits: number;
}

/** A plausible Ice Lake-SP style configuration: 6 KeyID bits, 63 MKTME keys, 46-bit physical addresses. */
export const MKTME_DEFAULTS: MktmeOptions = {
  tmeCapability: 1n | (6n << 32n) | (63n << 36n),
  tmeActivate: 1n | 2n | (6n << 32n) | (1n << 48n),
  physAddrBits: 46,
};

export class MktmePlatform {
  readonly capability: TmeCapability;
  readonly activate: TmeActivate;
  readonly physAddrBits: number;
  readonly keyIdShift: number;
  /** Highest usable KeyID: min(2^keyIdBits - 1, MK_TME_MAX_KEYS). */
  readonly maxKeyId: number;
  private readonly keys = new Map<number, KeyEntry>();
  private readonly tmeKey: XtsKey;
  /** DRAM (ciphertext) in 2 MiB slabs by slab number (address without KeyID / SLAB_SIZE); absent = zeros. */
  private readonly dram = new Map<number, Buffer>();

  constructor(o: MktmeOptions = MKTME_DEFAULTS) {
    this.capability = decodeTmeCapability(o.tmeCapability);
    this.activate = decodeTmeActivate(o.tmeActivate);
    if (!this.activate.locked || !this.activate.enabled) throw new BackendError('MKTME: IA32_TME_ACTIVATE lock/enable clear (TME off)');
    if (this.activate.keyIdBits === 0) throw new BackendError('MKTME: IA32_TME_ACTIVATE KeyID bits = 0 (MKTME off, TME only)');
    if (this.activate.keyIdBits > this.capability.maxKeyIdBits)
      throw new BackendError(`MKTME: ${this.activate.keyIdBits} KeyID bits activated but TME_CAPABILITY allows ${this.capability.maxKeyIdBits}`);
    if (!Number.isInteger(o.physAddrBits) || o.physAddrBits < 32 || o.physAddrBits > 52) throw new BackendError(`MKTME: MAXPHYADDR ${o.physAddrBits} outside 32..52`);
    this.physAddrBits = o.physAddrBits;
    this.keyIdShift = o.physAddrBits - this.activate.keyIdBits;
    this.maxKeyId = Math.min((1 << this.activate.keyIdBits) - 1, this.capability.maxKeys);
    this.tmeKey = xtsKey('aes-128', randomBytes(16), randomBytes(16));
    this.keys.set(0, { mode: 'tme' });
  }

  /** Physical address as the CPU issues it: KeyID in the top bits. */
  physicalAddress(keyId: number, address: bigint): bigint {
    return (BigInt(keyId) << BigInt(this.keyIdShift)) | address;
  }

  splitAddress(pa: bigint): { keyId: number; address: bigint } {
    const shift = BigInt(this.keyIdShift);
    return { keyId: Number(pa >> shift), address: pa & ((1n << shift) - 1n) };
  }

  /** PCONFIG leaf 0 (MKTME_KEY_PROGRAM): returns the architectural status in EAX. */
  pconfig(leaf: number, struct: Uint8Array): number {
    if (leaf !== PCONFIG_MKTME_KEY_PROGRAM) throw new BackendError(`PCONFIG leaf ${leaf} not supported (#GP)`);
    if (struct.length !== KEY_PROGRAM_STRUCT_SIZE) throw new BackendError(`PCONFIG: structure is ${struct.length} bytes, expected 256 (#GP)`);
    const b = Buffer.from(struct);
    for (const [from, to] of [[6, 64], [192, 256]] as const)
      for (let i = from; i < to; i++) if (b[i] !== 0) throw new BackendError(`PCONFIG: reserved byte at offset ${i} is not zero (#GP)`);
    const keyId = b.readUInt16LE(0);
    const ctrl = b.readUInt32LE(2);
    if (ctrl >>> 24) throw new BackendError(`PCONFIG: reserved KEYID_CTRL bits 31:24 set (0x${ctrl.toString(16)}) (#GP)`);
    const cmd = ctrl & 0xff;
    const alg = ctrl & 0xffff00;
    if (cmd > MKTME_CMD.NO_ENCRYPT) return MKTME_STATUS.INVALID_PROG_CMD;
    if (keyId === 0 || keyId > this.maxKeyId) return MKTME_STATUS.INVALID_KEYID;
    if (cmd === MKTME_CMD.SET_KEY_DIRECT || cmd === MKTME_CMD.SET_KEY_RANDOM) {
      // Exactly one algorithm bit, and it must be activated (TME_ACTIVATE bits 63:48 mirror bits 23:8).
      const activated = this.activate.cryptoAlgorithms << 8;
      if (alg === 0 || (alg & (alg - 1)) !== 0 || (alg & activated) === 0 || alg !== MKTME_ALG_AES_XTS_128) return MKTME_STATUS.INVALID_ENC_ALG;
      let k = b.subarray(64, 80);
      let t = b.subarray(128, 144);
      if (cmd === MKTME_CMD.SET_KEY_RANDOM) {
        // The CPU mixes its own entropy with the software-supplied bytes (XOR).
        const r1 = randomBytes(16);
        const r2 = randomBytes(16);
        k = Buffer.from(k.map((x, i) => x ^ r1[i]!));
        t = Buffer.from(t.map((x, i) => x ^ r2[i]!));
      }
      if (Buffer.compare(k, t) === 0) t = Buffer.from(t.map((x) => x ^ 0xff)); // XTS needs Key1 ≠ Key2
      this.keys.set(keyId, { mode: 'key', key: xtsKey('aes-128', k, t) });
    } else if (cmd === MKTME_CMD.CLEAR_KEY) this.keys.set(keyId, { mode: 'tme' });
    else this.keys.set(keyId, { mode: 'plain' });
    return MKTME_STATUS.PROG_SUCCESS;
  }

  private keyFor(keyId: number): XtsKey | null {
    const e = this.keys.get(keyId);
    if (!e) throw new BackendError(`MKTME: access with KeyID ${keyId}, which is not programmed (max KeyID ${this.maxKeyId})`);
    return e.mode === 'tme' ? this.tmeKey : e.mode === 'key' ? e.key : null;
  }

  private checkRange(address: bigint, length: number): void {
    if (address % BigInt(PAGE_SIZE) !== 0n || length % PAGE_SIZE !== 0) throw new BackendError(`MKTME: access 0x${address.toString(16)}+${length} is not page aligned`);
    if (address + BigInt(length) > 1n << BigInt(this.keyIdShift)) throw new BackendError(`MKTME: address 0x${address.toString(16)} overlaps the KeyID bits (${this.keyIdShift}+)`);
  }

  /** CPU read through a KeyID-tagged physical address (whole pages). */
  read(pa: bigint, length: number): Buffer {
    const { keyId, address } = this.splitAddress(pa);
    this.checkRange(address, length);
    const key = this.keyFor(keyId);
    if (!key) return this.readRaw(address, length);
    const out = Buffer.allocUnsafe(length);
    let zeros: Buffer | undefined; // DRAM never written holds zeros, which decrypt to garbage
    for (const s of this.slabRuns(address, length)) {
      const raw = this.dram.get(s.slab)?.subarray(s.offset, s.offset + s.length) ?? (zeros ??= Buffer.alloc(SLAB_SIZE)).subarray(0, s.length);
      cryptPages(key, s.address, raw, out.subarray(s.at, s.at + s.length), false);
    }
    return out;
  }

  write(pa: bigint, data: Uint8Array): void {
    const { keyId, address } = this.splitAddress(pa);
    this.checkRange(address, data.length);
    const key = this.keyFor(keyId);
    if (!key) {
      this.writeRaw(address, data);
      return;
    }
    // Encrypted straight into the DRAM slabs, one run per slab.
    for (const s of this.slabRuns(address, data.length)) cryptPages(key, s.address, data.subarray(s.at, s.at + s.length), this.slab(s.slab).subarray(s.offset, s.offset + s.length), true);
  }

  /** DRAM contents (ciphertext), address without KeyID. */
  readRaw(address: bigint, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (const s of this.slabRuns(address, length)) this.dram.get(s.slab)?.copy(out, s.at, s.offset, s.offset + s.length);
    return out;
  }

  writeRaw(address: bigint, bytes: Uint8Array): void {
    for (const s of this.slabRuns(address, bytes.length)) this.slab(s.slab).set(bytes.subarray(s.at, s.at + s.length), s.offset);
  }

  /** Drop DRAM pages (frames returned): they read as zeros again. */
  freeFrames(address: bigint, length: number): void {
    for (const s of this.slabRuns(address, length)) {
      if (s.length === SLAB_SIZE) this.dram.delete(s.slab);
      else this.dram.get(s.slab)?.fill(0, s.offset, s.offset + s.length);
    }
  }

  private slab(n: number): Buffer {
    let b = this.dram.get(n);
    if (!b) this.dram.set(n, (b = Buffer.alloc(SLAB_SIZE)));
    return b;
  }

  /** [address, address+length) cut at slab boundaries: slab number, offset in it, offset in the access. */
  private *slabRuns(address: bigint, length: number): Generator<{ slab: number; offset: number; at: number; length: number; address: number }> {
    const start = Number(address);
    for (let at = 0; at < length; ) {
      const a = start + at;
      const offset = a % SLAB_SIZE;
      const n = Math.min(SLAB_SIZE - offset, length - at);
      yield { slab: Math.floor(a / SLAB_SIZE), offset, at, length: n, address: a };
      at += n;
    }
  }
}
