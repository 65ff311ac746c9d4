/**
 * The enclave quote parser (CONTRACT-12 layout) refuses bad input with one line naming the field
 * and byte offset; the HAK PCR value and REPORTDATA are what the contract's formulas give when
 * computed here with Node crypto, byte by byte (not with the functions under test).
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { enclaveQuoteSignatureOk, expectedReportData, hakFromEventData, hakPcrValue, parseEnclaveQuote } from './enclave-quote.js';

function quote(): Buffer {
  const k = generateKeyPairSync('ed25519');
  const head = Buffer.alloc(16);
  head.write('HEQ1', 0, 'latin1');
  head.writeUInt16LE(1, 4);
  head.writeUInt16LE(1, 6);
  head.writeUInt32LE(13, 8);
  const body = Buffer.alloc(384, 0x5a);
  const pub = (k.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).subarray(12);
  const signed = Buffer.concat([head, body, pub]);
  return Buffer.concat([signed, sign(null, signed, k.privateKey)]);
}

describe('enclave quote layout', () => {
  it('parses the fields at their offsets and checks the Ed25519 signature', () => {
    const q = quote();
    const p = parseEnclaveQuote(q);
    expect([p.magic, p.version, p.sigAlg, p.hakPcr, p.flags, p.dmaProtected]).toEqual(['HEQ1', 1, 1, 13, 0, false]);
    expect(p.body.mrenclave).toEqual(Buffer.alloc(32, 0x5a));
    expect(p.hakPublic).toEqual(q.subarray(400, 432));
    expect(enclaveQuoteSignatureOk(p)).toBe(true);
    const bad = Buffer.from(q);
    bad[100]! ^= 1;
    expect(enclaveQuoteSignatureOk(parseEnclaveQuote(bad))).toBe(false);
  });

  it('refuses bad quotes with the field and its byte offset', () => {
    const q = quote();
    const at = (off: number, v: number, size: 1 | 2 | 4 = 2): Buffer => {
      const b = Buffer.from(q);
      if (size === 1) b[off] = v;
      else if (size === 2) b.writeUInt16LE(v, off);
      else b.writeUInt32LE(v, off);
      return b;
    };
    expect(() => parseEnclaveQuote(q.subarray(0, 495))).toThrow(/^enclave quote: 495 bytes, expected exactly 496$/);
    expect(() => parseEnclaveQuote(at(0, 0x48, 1).fill(0x51, 3, 4))).toThrow(/byte 0: magic "HEQQ" is not "HEQ1"/);
    expect(() => parseEnclaveQuote(at(4, 2))).toThrow(/byte 4: version 2, expected 1/);
    expect(() => parseEnclaveQuote(at(6, 3))).toThrow(/byte 6: signature algorithm 3, expected 1 \(Ed25519\)/);
    expect(() => parseEnclaveQuote(at(8, 24, 4))).toThrow(/byte 8: HAK PCR index 24 out of range 0-23/);
    expect(parseEnclaveQuote(at(12, 1, 4)).dmaProtected).toBe(true);
    expect(() => parseEnclaveQuote(at(12, 3, 4))).toThrow(/byte 12: flags 0x3 has bits other than DMA_PROTECTED \(0x1\)/);
  });

  it('HAK PCR value = H(0 ‖ H("hyperenclave-hak:ed25519:" ‖ hex key)) per bank; the event data round-trips', () => {
    const key = Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex'); // RFC 8032 test 1 public key
    const data = Buffer.from('hyperenclave-hak:ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(data.length).toBe(89);
    for (const [h, size] of [['sha1', 20], ['sha256', 32], ['sha384', 48]] as const) {
      const want = createHash(h).update(Buffer.alloc(size)).update(createHash(h).update(data).digest()).digest();
      expect(hakPcrValue(h, key)).toEqual(want);
    }
    expect(hakFromEventData(data)).toEqual(key);
    expect(hakFromEventData(Buffer.concat([data, Buffer.from([0])]))).toBeUndefined();
    expect(hakFromEventData(Buffer.from(data.toString().toUpperCase()))).toBeUndefined();
  });

  it('REPORTDATA = SHA-256(nonce ‖ userData) ‖ 32 zero bytes', () => {
    const nonce = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const rd = expectedReportData(nonce, Buffer.from('c0ffee', 'hex'));
    expect(rd.length).toBe(64);
    expect(rd.subarray(0, 32)).toEqual(createHash('sha256').update(Buffer.from('00112233445566778899aabbccddeeffc0ffee', 'hex')).digest());
    expect(rd.subarray(32)).toEqual(Buffer.alloc(32));
  });
});
