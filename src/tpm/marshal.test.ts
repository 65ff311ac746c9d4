import { describe, expect, it } from 'vitest';
import { TPM_ALG } from './alg.js';
import { TPM_CAP, TPM_GENERATED_VALUE, TPM_ST } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { TpmReader, TpmWriter, marshal, unmarshalExact } from './marshal.js';
import {
  marshalAttest,
  marshalCapabilityData,
  marshalContext,
  marshalDigestValues,
  marshalIdObject2B,
  marshalNvPublic,
  marshalPcrSelectionList,
  marshalPublic,
  marshalPublic2B,
  marshalSignature,
  readAttest,
  readCapabilityData,
  readContext,
  readDigestValues,
  readIdObject2B,
  readNvPublic,
  readPcrSelectionList,
  readPublic,
  readPublic2B,
  readSignature,
  type CapabilityData,
  type TpmsAttest,
  type TpmtSignature,
} from './structures.js';
import { akTemplate, ekTemplateEcc, ekTemplateRsa, srkTemplate } from './templates.js';
import { objectName } from './crypto.js';

function roundTrip<T>(v: T, write: (w: TpmWriter, v: T) => void, read: (r: TpmReader) => T): T {
  const bytes = marshal((w) => write(w, v));
  const back = unmarshalExact(bytes, 'test', read);
  expect(marshal((w) => write(w, back))).toEqual(bytes);
  return back;
}

describe('TpmReader / TpmWriter', () => {
  it('says where it stopped as data: {what, field, offset, reason}, truncation with need/left', () => {
    const r = new TpmReader(Buffer.from([0, 1, 2]), 'TPMS_TEST', 10);
    r.u8('first');
    let err: unknown;
    try {
      r.u32('second');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TpmProtocolError);
    expect((err as TpmProtocolError).parse).toEqual({ what: 'TPMS_TEST', field: 'second', offset: 11, reason: 'needs 4 byte(s), only 2 left', truncated: { need: 4, left: 2 } });
    expect((err as Error).message).toBe('TPMS_TEST: second at byte 11: needs 4 byte(s), only 2 left');
    const t = new TpmReader(Buffer.from([0, 1]), 'TPMS_TEST');
    t.u8('a');
    expect(() => t.done('tail')).toThrow(expect.objectContaining({ parse: { what: 'TPMS_TEST', field: 'tail', offset: 1, reason: '1 unexpected trailing byte(s)' } }));
  });

  it('writes and reads integers big-endian', () => {
    const b = new TpmWriter(1).u8(0xab).u16(0x1234).u32(0xdeadbeef).u64(0x0102030405060708n).i32(-2).finish();
    expect(b.toString('hex')).toBe('ab1234deadbeef0102030405060708fffffffe');
    const r = new TpmReader(b);
    expect([r.u8('a'), r.u16('b'), r.u32('c'), r.u64('d'), r.i32('e')]).toEqual([0xab, 0x1234, 0xdeadbeef, 0x0102030405060708n, -2]);
    r.done('x');
  });
  it('names field and absolute offset on overrun', () => {
    const r = new TpmReader(Buffer.from([0, 5, 1, 2]), 'TPM2_Quote response', 10);
    expect(() => r.tpm2b('quoted', 64)).toThrow(
      expect.objectContaining({ name: 'TpmProtocolError', message: 'TPM2_Quote response: quoted at byte 12: needs 5 byte(s), only 2 left', parse: { what: 'TPM2_Quote response', field: 'quoted', offset: 12, reason: 'needs 5 byte(s), only 2 left', truncated: { need: 5, left: 2 } } }),
    );
  });
  it('rejects sizes over the declared maximum before reading', () => {
    const r = new TpmReader(Buffer.from([0xff, 0xff]), 'x');
    expect(() => r.tpm2b('digest', 64)).toThrow(/digest at byte 0: size 65535 exceeds the maximum 64/);
  });
  it('rejects list counts the remaining bytes cannot hold', () => {
    const r = new TpmReader(Buffer.from([0, 0, 0, 8, 0, 0]), 'x');
    expect(() => r.count('TPML_DIGEST', 8, 2)).toThrow(/count 8 needs at least 16 byte\(s\)/);
  });
  it('reports trailing bytes', () => {
    expect(() => unmarshalExact(Buffer.from([1, 2, 3]), 'thing', (r) => r.u16('a'))).toThrow(/thing: thing at byte 2: 1 unexpected trailing byte/);
  });
});

describe('structure round trips', () => {
  it('TPML_PCR_SELECTION', () => {
    const v = roundTrip(
      [
        { hash: TPM_ALG.SHA256, pcrs: [0, 1, 7, 16, 23] },
        { hash: TPM_ALG.SHA1, pcrs: [] },
      ],
      marshalPcrSelectionList,
      readPcrSelectionList,
    );
    expect(v[0]!.pcrs).toEqual([0, 1, 7, 16, 23]);
    expect(v[0]!.sizeofSelect).toBe(3);
    expect(marshal((w) => marshalPcrSelectionList(w, [{ hash: TPM_ALG.SHA256, pcrs: [0, 17] }])).toString('hex')).toBe('00000001000b03010002');
  });
  it('TPML_DIGEST_VALUES', () => {
    roundTrip(
      [
        { hashAlg: TPM_ALG.SHA1, digest: Buffer.alloc(20, 1) },
        { hashAlg: TPM_ALG.SHA384, digest: Buffer.alloc(48, 2) },
      ],
      marshalDigestValues,
      readDigestValues,
    );
  });
  it('TPMT_PUBLIC for every template; names are stable', () => {
    for (const t of [ekTemplateRsa(), ekTemplateEcc(), srkTemplate('rsa'), srkTemplate('ecc'), akTemplate('rsa'), akTemplate('ecc')]) {
      expect(roundTrip(t, marshalPublic, readPublic)).toEqual(t);
      roundTrip(t, marshalPublic2B, readPublic2B);
    }
    roundTrip(
      { type: TPM_ALG.KEYEDHASH, nameAlg: TPM_ALG.SHA256, objectAttributes: 0x52, authPolicy: Buffer.alloc(0), parameters: { scheme: { scheme: TPM_ALG.HMAC, hashAlg: TPM_ALG.SHA256 } }, unique: Buffer.alloc(32, 3) },
      marshalPublic,
      readPublic,
    );
    roundTrip(
      { type: TPM_ALG.SYMCIPHER, nameAlg: TPM_ALG.SHA256, objectAttributes: 0x60072, authPolicy: Buffer.alloc(0), parameters: { sym: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } }, unique: Buffer.alloc(0) },
      marshalPublic,
      readPublic,
    );
    // The RSA EK template (L-1) Name is fixed by its bytes.
    expect(objectName(ekTemplateRsa()).subarray(0, 2).toString('hex')).toBe('000b');
  });
  it('TPMS_ATTEST of every kind', () => {
    const base = { magic: TPM_GENERATED_VALUE, qualifiedSigner: Buffer.alloc(34, 1), extraData: Buffer.from('nonce'), clockInfo: { clock: 123456789n, resetCount: 2, restartCount: 3, safe: true }, firmwareVersion: 0x2021111122223333n };
    const kinds: TpmsAttest['attested'][] = [
      { kind: 'quote', pcrSelect: [{ hash: TPM_ALG.SHA256, pcrs: [0, 1], sizeofSelect: 3 }], pcrDigest: Buffer.alloc(32, 9) },
      { kind: 'certify', name: Buffer.alloc(34, 2), qualifiedName: Buffer.alloc(34, 3) },
      { kind: 'creation', objectName: Buffer.alloc(34, 2), creationHash: Buffer.alloc(32, 3) },
      { kind: 'time', time: 99n, clockInfo: { clock: 1n, resetCount: 0, restartCount: 0, safe: false }, firmwareVersion: 7n },
      { kind: 'sessionAudit', exclusiveSession: true, sessionDigest: Buffer.alloc(32) },
      { kind: 'commandAudit', auditCounter: 5n, digestAlg: TPM_ALG.SHA256, auditDigest: Buffer.alloc(32, 1), commandDigest: Buffer.alloc(32, 2) },
      { kind: 'nv', indexName: Buffer.alloc(34), offset: 4, nvContents: Buffer.from('abc') },
      { kind: 'nvDigest', indexName: Buffer.alloc(34), nvDigest: Buffer.alloc(32) },
    ];
    const types = [TPM_ST.ATTEST_QUOTE, TPM_ST.ATTEST_CERTIFY, TPM_ST.ATTEST_CREATION, TPM_ST.ATTEST_TIME, TPM_ST.ATTEST_SESSION_AUDIT, TPM_ST.ATTEST_COMMAND_AUDIT, TPM_ST.ATTEST_NV, TPM_ST.ATTEST_NV_DIGEST];
    kinds.forEach((attested, i) => {
      const v = { ...base, type: types[i]!, attested };
      expect(roundTrip(v, marshalAttest, readAttest)).toEqual(v);
    });
  });
  it('TPMT_SIGNATURE of every kind', () => {
    const sigs: TpmtSignature[] = [
      { kind: 'rsa', sigAlg: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256, sig: Buffer.alloc(256, 1) },
      { kind: 'rsa', sigAlg: TPM_ALG.RSAPSS, hash: TPM_ALG.SHA384, sig: Buffer.alloc(256, 2) },
      { kind: 'ecc', sigAlg: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256, r: Buffer.alloc(32, 3), s: Buffer.alloc(32, 4) },
      { kind: 'ecc', sigAlg: TPM_ALG.SM2, hash: TPM_ALG.SM3_256, r: Buffer.alloc(32, 3), s: Buffer.alloc(32, 4) },
      { kind: 'hmac', sigAlg: TPM_ALG.HMAC, hmac: { hashAlg: TPM_ALG.SHA256, digest: Buffer.alloc(32, 5) } },
      { kind: 'null', sigAlg: TPM_ALG.NULL },
    ];
    for (const s of sigs) expect(roundTrip(s, marshalSignature, readSignature)).toEqual(s);
  });
  it('TPMS_CONTEXT, TPMS_NV_PUBLIC, TPM2B_ID_OBJECT', () => {
    roundTrip({ sequence: 77n, savedHandle: 0x80000000, hierarchy: 0x40000001, contextBlob: Buffer.alloc(900, 7) }, marshalContext, readContext);
    roundTrip({ nvIndex: 0x01c00002, nameAlg: TPM_ALG.SHA256, attributes: 0x62072801, authPolicy: Buffer.alloc(0), dataSize: 1016 }, marshalNvPublic, readNvPublic);
    roundTrip({ integrityHmac: Buffer.alloc(32, 1), encIdentity: Buffer.alloc(34, 2) }, marshalIdObject2B, readIdObject2B);
  });
  it('TPMS_CAPABILITY_DATA of every kind', () => {
    const caps: CapabilityData[] = [
      { capability: TPM_CAP.ALGS, algs: [{ alg: 1, properties: 9 }] },
      { capability: TPM_CAP.HANDLES, handles: [0x80000000, 0x80000001] },
      { capability: TPM_CAP.COMMANDS, commands: [0x0200011f] },
      { capability: TPM_CAP.AUDIT_COMMANDS, commandCodes: [0x17e] },
      { capability: TPM_CAP.PCRS, pcrs: [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2], sizeofSelect: 3 }] },
      { capability: TPM_CAP.TPM_PROPERTIES, properties: [{ property: 0x100, value: 0x322e3000 }] },
      { capability: TPM_CAP.PCR_PROPERTIES, pcrProperties: [{ tag: 0, pcrs: [16, 23] }] },
      { capability: TPM_CAP.ECC_CURVES, curves: [3, 4] },
      { capability: TPM_CAP.AUTH_POLICIES, policies: [{ handle: 0x4000000b, policyHash: { hashAlg: TPM_ALG.SHA256, digest: Buffer.alloc(32) } }] },
    ];
    for (const c of caps) expect(roundTrip(c, marshalCapabilityData, readCapabilityData)).toEqual(c);
  });
});
