import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TPM_ALG } from './alg.js';
import { TpmProtocolError } from './errors.js';
import { TpmReader } from './marshal.js';
import { parseAttest, parseSignature, readPublic } from './structures.js';
import { TpmVerifyError, pcrDigest, publicKeyFromTpmt, readPcrsSerialized, verifyQuote, verifySignature, writePcrsSerialized, type PcrBank } from './verify.js';
import { objectName } from './crypto.js';

const fixture = JSON.parse(readFileSync(join(import.meta.dirname, '../../test/fixtures/tpm/gcp-windows-quote.json'), 'utf8')) as {
  akPublic: string;
  quote: string;
  signature: string;
  nonce: string;
  pcrs: Record<string, string>;
};

describe('verification of a real vTPM quote (Google Cloud Shielded VM, go-attestation test data)', () => {
  const ak = readPublic(new TpmReader(Buffer.from(fixture.akPublic, 'base64'), 'AK'));
  const attest = Buffer.from(fixture.quote, 'base64');
  const sig = Buffer.from(fixture.signature, 'base64');
  const bank: PcrBank = { hash: TPM_ALG.SHA1, values: new Map(Object.entries(fixture.pcrs).map(([k, v]) => [Number(k), Buffer.from(v, 'base64')])) };

  it('parses the AK, the attestation and the signature', () => {
    expect(ak.type).toBe(TPM_ALG.RSA);
    expect(publicKeyFromTpmt(ak).asymmetricKeyDetails?.modulusLength).toBe(2048);
    const a = parseAttest(attest);
    expect(a.attested.kind).toBe('quote');
    if (a.attested.kind === 'quote') expect(a.attested.pcrSelect).toEqual([{ hash: TPM_ALG.SHA1, pcrs: Array.from({ length: 24 }, (_, i) => i), sizeofSelect: 3 }]);
    // The attestation names its signer: the AK's Name.
    expect(a.qualifiedSigner.subarray(0, 2)).toEqual(objectName(ak).subarray(0, 2));
    expect(parseSignature(sig)).toMatchObject({ kind: 'rsa', sigAlg: TPM_ALG.RSASSA, hash: TPM_ALG.SHA1 });
  });

  it('signature, nonce and the 24 SHA-1 PCRs check out', () => {
    const r = verifyQuote({ ak, attest, signature: sig, nonce: Buffer.from(fixture.nonce, 'base64'), pcrs: [bank] });
    expect(r.pcrDigest?.length).toBe(20);
  });

  it('a changed PCR, a changed message or a changed signature is refused, saying what', () => {
    const bad = { hash: bank.hash, values: new Map(bank.values) };
    bad.values.set(7, Buffer.alloc(20, 1));
    expect(() => verifyQuote({ ak, attest, signature: sig, pcrs: [bad] })).toThrow(/PCR values hash to [0-9a-f]+, the quote says/);
    const m = Buffer.from(attest);
    m[20]! ^= 0x40;
    expect(() => verifyQuote({ ak, attest: m, signature: sig })).toThrow(TpmVerifyError);
    const s = Buffer.from(sig);
    s[s.length - 1]! ^= 1;
    expect(verifySignature(ak, attest, s)).toBe(false);
    expect(() => verifyQuote({ ak, attest, signature: sig, pcrs: [{ hash: TPM_ALG.SHA1, values: new Map() }] })).toThrow(/PCR 0 of bank sha1 is selected in the quote but no value was given/);
  });
});

describe('tpm2-tools serialized PCR format', () => {
  it('round-trips and has the documented sizes (132 + 4 + n × 532)', () => {
    const sel = [
      { hash: TPM_ALG.SHA256, pcrs: Array.from({ length: 10 }, (_, i) => i) },
      { hash: TPM_ALG.SHA1, pcrs: [17] },
    ];
    const banks: PcrBank[] = [
      { hash: TPM_ALG.SHA256, values: new Map(sel[0]!.pcrs.map((p) => [p, Buffer.alloc(32, p)])) },
      { hash: TPM_ALG.SHA1, values: new Map([[17, Buffer.alloc(20, 0xff)]]) },
    ];
    const bytes = writePcrsSerialized(sel, banks);
    expect(bytes.length).toBe(132 + 4 + 2 * 532);
    const back = readPcrsSerialized(bytes);
    expect(back.selection.map((s) => [s.hash, s.pcrs])).toEqual(sel.map((s) => [s.hash, s.pcrs]));
    expect(back.banks).toEqual(banks);
    expect(pcrDigest(TPM_ALG.SHA256, back.selection, back.banks)).toEqual(pcrDigest(TPM_ALG.SHA256, sel, banks));
  });
  it('names the byte offset of what is wrong', () => {
    expect(() => readPcrsSerialized(Buffer.alloc(10))).toThrow(TpmProtocolError);
    const b = writePcrsSerialized([{ hash: TPM_ALG.SHA1, pcrs: [0] }], [{ hash: TPM_ALG.SHA1, values: new Map([[0, Buffer.alloc(20)]]) }]);
    b.writeUInt32LE(9, 136);
    expect(() => readPcrsSerialized(b)).toThrow(/byte 136: digest count 9 exceeds 8/);
  });
});
