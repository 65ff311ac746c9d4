import { describe, expect, it } from 'vitest';
import { xtsCryptPages, xtsKey } from '../../crypto/xts.js';
import { MKTME_ALG_AES_XTS_128, MKTME_CMD, MKTME_DEFAULTS, MKTME_STATUS, MktmePlatform, keyProgramStruct } from './mktme.js';

const page = (v: number): Buffer => Buffer.alloc(4096, v);

describe('MKTME PCONFIG MKTME_KEY_PROGRAM', () => {
  it('lays out the 256-byte structure as the spec: keyid u16 @0, keyid_ctrl u32 @2, key @64, tweak key @128', () => {
    const s = keyProgramStruct(5, MKTME_CMD.SET_KEY_DIRECT, MKTME_ALG_AES_XTS_128, Buffer.alloc(16, 0xaa), Buffer.alloc(16, 0xbb));
    expect(s.length).toBe(256);
    expect(s.readUInt16LE(0)).toBe(5);
    expect(s.readUInt32LE(2)).toBe(0x100);
    expect(s[64]).toBe(0xaa);
    expect(s[128]).toBe(0xbb);
    expect(s[63]).toBe(0);
  });

  it('returns the architectural status codes', () => {
    const p = new MktmePlatform();
    expect(p.maxKeyId).toBe(63);
    expect(p.pconfig(0, keyProgramStruct(1, MKTME_CMD.SET_KEY_RANDOM, MKTME_ALG_AES_XTS_128))).toBe(MKTME_STATUS.PROG_SUCCESS);
    expect(p.pconfig(0, keyProgramStruct(1, 4, MKTME_ALG_AES_XTS_128))).toBe(MKTME_STATUS.INVALID_PROG_CMD);
    expect(p.pconfig(0, keyProgramStruct(0, MKTME_CMD.SET_KEY_RANDOM, MKTME_ALG_AES_XTS_128))).toBe(MKTME_STATUS.INVALID_KEYID);
    expect(p.pconfig(0, keyProgramStruct(64, MKTME_CMD.SET_KEY_RANDOM, MKTME_ALG_AES_XTS_128))).toBe(MKTME_STATUS.INVALID_KEYID);
    expect(p.pconfig(0, keyProgramStruct(2, MKTME_CMD.SET_KEY_DIRECT, 1 << 9, Buffer.alloc(16, 1), Buffer.alloc(16, 2)))).toBe(MKTME_STATUS.INVALID_ENC_ALG);
    expect(p.pconfig(0, keyProgramStruct(2, MKTME_CMD.SET_KEY_DIRECT, 0))).toBe(MKTME_STATUS.INVALID_ENC_ALG);
    const reserved = keyProgramStruct(2, MKTME_CMD.CLEAR_KEY, 0);
    reserved[10] = 1;
    expect(() => p.pconfig(0, reserved)).toThrow(/reserved byte at offset 10/);
    expect(() => p.pconfig(1, keyProgramStruct(2, 0, 0))).toThrow(/leaf 1/);
  });

  it('the KeyID count follows TME_ACTIVATE KeyID bits and TME_CAPABILITY max keys', () => {
    expect(new MktmePlatform({ ...MKTME_DEFAULTS, tmeActivate: 3n | (3n << 32n) | (1n << 48n) }).maxKeyId).toBe(7);
    expect(new MktmePlatform({ ...MKTME_DEFAULTS, tmeCapability: 1n | (6n << 32n) | (20n << 36n) }).maxKeyId).toBe(20);
    expect(() => new MktmePlatform({ ...MKTME_DEFAULTS, tmeActivate: 3n })).toThrow(/KeyID bits = 0/);
    expect(() => new MktmePlatform({ ...MKTME_DEFAULTS, tmeActivate: 3n | (7n << 32n) | (1n << 48n) })).toThrow(/allows 6/);
  });

  it('KeyIDs select keys through the upper address bits: direct keys, TME key, NO_ENCRYPT, CLEAR_KEY', () => {
    const p = new MktmePlatform();
    const addr = 0x4000_0000n;
    expect(p.physicalAddress(3, addr)).toBe((3n << 40n) | addr);
    expect(p.splitAddress((3n << 40n) | addr)).toEqual({ keyId: 3, address: addr });
    expect(p.pconfig(0, keyProgramStruct(3, MKTME_CMD.SET_KEY_DIRECT, MKTME_ALG_AES_XTS_128, Buffer.alloc(16, 1), Buffer.alloc(16, 2)))).toBe(0);
    p.write(p.physicalAddress(3, addr), page(0x42));
    expect(p.read(p.physicalAddress(3, addr), 4096).equals(page(0x42))).toBe(true);
    expect(p.readRaw(addr, 4096).equals(page(0x42))).toBe(false);
    expect(p.read(p.physicalAddress(0, addr), 4096).equals(page(0x42))).toBe(false);
    // Same tenant key on another KeyID reads the same plaintext (keys, not KeyIDs, matter).
    expect(p.pconfig(0, keyProgramStruct(4, MKTME_CMD.SET_KEY_DIRECT, MKTME_ALG_AES_XTS_128, Buffer.alloc(16, 1), Buffer.alloc(16, 2)))).toBe(0);
    expect(p.read(p.physicalAddress(4, addr), 4096).equals(page(0x42))).toBe(true);
    expect(p.pconfig(0, keyProgramStruct(5, MKTME_CMD.NO_ENCRYPT, 0))).toBe(0);
    p.write(p.physicalAddress(5, addr + 4096n), page(7));
    expect(p.readRaw(addr + 4096n, 4096).equals(page(7))).toBe(true);
    expect(p.pconfig(0, keyProgramStruct(6, MKTME_CMD.CLEAR_KEY, 0))).toBe(0);
    p.write(p.physicalAddress(6, addr + 8192n), page(9));
    expect(p.read(p.physicalAddress(0, addr + 8192n), 4096).equals(page(9))).toBe(true);
    expect(() => p.read(p.physicalAddress(9, addr), 4096)).toThrow(/KeyID 9, which is not programmed/);
  });

  it('DRAM across 2 MiB slab boundaries: round trips, unwritten frames decrypt zeros, freed frames read as zeros', () => {
    const p = new MktmePlatform();
    expect(p.pconfig(0, keyProgramStruct(2, MKTME_CMD.SET_KEY_DIRECT, MKTME_ALG_AES_XTS_128, Buffer.alloc(16, 3), Buffer.alloc(16, 4)))).toBe(0);
    const slab = 2n * 1024n * 1024n;
    const base = 5n * slab - 3n * 4096n; // 3 pages before a slab boundary, 4 after
    const data = Buffer.from(Array.from({ length: 7 * 4096 }, (_, i) => (i * 7) & 0xff));
    p.write(p.physicalAddress(2, base), data);
    expect(p.read(p.physicalAddress(2, base), data.length).equals(data)).toBe(true);
    expect(p.read(p.physicalAddress(2, base + 4096n), 5 * 4096).equals(data.subarray(4096, 6 * 4096))).toBe(true);
    // A page never written holds zero ciphertext; through a key it reads as their decryption.
    const untouched = p.read(p.physicalAddress(2, base + 7n * 4096n), 4096);
    expect(untouched.equals(Buffer.alloc(4096))).toBe(false);
    expect(p.readRaw(base + 7n * 4096n, 4096).equals(Buffer.alloc(4096))).toBe(true);
    p.freeFrames(base, 7 * 4096);
    expect(p.readRaw(base, 7 * 4096).equals(Buffer.alloc(7 * 4096))).toBe(true);
    const key = xtsKey('aes-128', Buffer.alloc(16, 3), Buffer.alloc(16, 4));
    expect(untouched.equals(xtsCryptPages(key, base + 7n * 4096n, Buffer.alloc(4096), false))).toBe(true);
    expect(p.read(p.physicalAddress(2, base + 4n * 4096n), 4096).equals(xtsCryptPages(key, base + 4n * 4096n, Buffer.alloc(4096), false))).toBe(true);
  });
});
