import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Verifier } from './verifier.js';
import { parsePcrsFile, writePcrsFile } from './tpm2-tools.js';
import { parseQuoteAttest, parseSignature, akKeyFromInput, verifyQuoteSignature } from './tpm-structures.js';
import type { AttestationResult } from './result.js';
import { verifyEar } from '../verifier/ear.js';
import type { VerifierPolicy } from './policy.js';

const FIX = join(import.meta.dirname, '../../test/fixtures/attest');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function verifier(policy: Partial<VerifierPolicy> = {}): Verifier {
  const dir = mkdtempSync(join(tmpdir(), 'attest-verify-'));
  dirs.push(dir);
  return new Verifier({ stateDir: dir, policy: { schema: 'hyperenclave/verifier-policy', version: 1, checks: { 'ak.provenance': 'optional' }, ...policy } });
}

function files(kind: string) {
  const d = join(FIX, `tpm2-tools-${kind}`);
  return {
    message: readFileSync(join(d, 'quote.msg')),
    signature: readFileSync(join(d, 'quote.sig')),
    pcrs: readFileSync(join(d, 'quote.pcrs')),
    akPem: readFileSync(join(d, 'ak.pem'), 'utf8'),
    nonce: Buffer.from(readFileSync(join(d, 'nonce.hex'), 'utf8').trim(), 'hex'),
  };
}

const check = (r: AttestationResult, name: string) => r.checks.find((c) => c.name === name);

describe('tpm2-tools quotes (fixtures made by tpm2_quote against swtpm)', () => {
  for (const kind of ['ecc-p256', 'ecc-p384', 'rsa-rsassa', 'rsa-rsapss']) {
    it(`${kind}: every quote check passes and the result JWT verifies`, async () => {
      const v = verifier();
      const f = files(kind);
      const { result, ear } = v.verifyTpm2Tools(f, f.nonce);
      for (const n of ['attest.magic', 'attest.type', 'signature', 'nonce', 'pcr.digest']) expect(check(result, n)?.status, n).toBe('pass');
      // AK provenance cannot go below `expected`: an AK nobody enrolled contraindicates
      expect(check(result, 'ak.provenance')).toMatchObject({ status: 'fail', requirement: 'expected' });
      expect(result['ear.status']).toBe('contraindicated');
      const claims = await verifyEar(await ear(), v.state.key().publicKey);
      expect(claims.submods.hyperenclave!['ear.status']).toBe(result['ear.status']);
      expect(claims.submods.hyperenclave!['hyperenclave.checks']!.map((c) => c.name)).toEqual(result.checks.map((c) => c.name));
    });
  }

  it('parses TPMS_ATTEST, TPMT_SIGNATURE and the serialized PCR file', () => {
    const f = files('ecc-p256');
    const q = parseQuoteAttest(f.message);
    expect(q.extraData).toEqual(f.nonce);
    expect(q.selection.map((s) => s.pcrs)).toEqual([[0, 1, 7, 12], [0]]);
    expect(parseSignature(f.signature).sigAlg).toBe(0x18);
    const p = parsePcrsFile(f.pcrs);
    expect([...p.values.get('sha256')!.keys()]).toEqual([0, 1, 7, 12]);
    expect(writePcrsFile([...p.values].map(([bank, values]) => ({ bank, values })))).toEqual(f.pcrs);
  });

  it('refuses truncated and garbled structures with a byte offset', () => {
    const f = files('ecc-p256');
    expect(() => parseQuoteAttest(f.message.subarray(0, 50))).toThrow(/truncated at byte \d+/);
    expect(() => parsePcrsFile(f.pcrs.subarray(0, 200))).toThrow(/pcrs file: serialized PCR file: byte \d+: .*need 668 bytes, file has 200/);
    const extra = Buffer.concat([f.message, Buffer.from([0])]);
    expect(() => parseQuoteAttest(extra)).toThrow(/trailing byte/);
  });

  describe('negative matrix', () => {
    const f = files('ecc-p256');
    const flip = (b: Buffer, at: number): Buffer => {
      const c = Buffer.from(b);
      c[at]! ^= 0x01;
      return c;
    };
    const cases: [string, () => ReturnType<Verifier['verifyTpm2Tools']>, string][] = [
      ['flipped bit in TPMS_ATTEST (clock)', () => verifier().verifyTpm2Tools({ ...f, message: flip(f.message, 0x40) }, f.nonce), 'signature'],
      ['flipped bit in TPMS_ATTEST magic', () => verifier().verifyTpm2Tools({ ...f, message: flip(f.message, 0) }, f.nonce), 'attest.magic'],
      ['flipped bit in the signature', () => verifier().verifyTpm2Tools({ ...f, signature: flip(f.signature, 20) }, f.nonce), 'signature'],
      ['flipped bit in a PCR value', () => verifier().verifyTpm2Tools({ ...f, pcrs: flip(f.pcrs, 150) }, f.nonce), 'pcr.digest'],
      ['wrong nonce', () => verifier().verifyTpm2Tools(f, Buffer.from('00112233445566778899aabbccddeeff', 'hex')), 'nonce'],
      ['quote from another TPM (other AK)', () => verifier().verifyTpm2Tools({ ...f, akPem: files('ecc-p384').akPem }, f.nonce), 'signature'],
      ['PCR selection omitting a required PCR', () => verifier({ requiredPcrs: { sha256: [0, 7, 12, 14] } }).verifyTpm2Tools(f, f.nonce), 'pcr.selection'],
      ['AK not enrolled (policy requires provenance)', () => verifier({ checks: {} }).verifyTpm2Tools(f, f.nonce), 'ak.provenance'],
      ['platform kind unknown (nothing vouches for the AK) when policy requires real hardware', () => verifier({ platform: { requireReal: true } }).verifyTpm2Tools(f, f.nonce), 'platform.kind'],
      ['AK provenance "optional" in the policy: raised to its floor (expected)', () => verifier({ checks: { 'ak.provenance': 'optional' } }).verifyTpm2Tools(f, f.nonce), 'ak.provenance'],
    ];
    for (const [what, run, name] of cases) {
      it(`${what} -> ${name} fails, contraindicated`, () => {
        const { result } = run();
        expect(check(result, name)?.status, JSON.stringify(result.checks)).toBe('fail');
        expect(result['ear.status']).toBe('contraindicated');
      });
    }
  });

  it('SM2 quote made by swtpm (AK as TPM2B_PUBLIC) verifies; a flipped bit does not', () => {
    const d = join(FIX, 'tpm2-tools-sm2');
    const f = { message: readFileSync(join(d, 'quote.msg')), signature: readFileSync(join(d, 'quote.sig')), pcrs: readFileSync(join(d, 'quote.pcrs')), akPem: readFileSync(join(d, 'ak.pub')) };
    const nonce = Buffer.from(readFileSync(join(d, 'nonce.hex'), 'utf8').trim(), 'hex');
    const { result } = verifier().verifyTpm2Tools(f, nonce);
    expect(check(result, 'signature'), JSON.stringify(result.checks)).toMatchObject({ status: 'pass', reason: expect.stringMatching(/^sm2 .*sm2 SM2-P256/) });
    expect(check(result, 'pcr.digest')?.status).toBe('pass');
    const m = Buffer.from(f.message);
    m[m.length - 1]! ^= 1;
    expect(check(verifier().verifyTpm2Tools({ ...f, message: m }, nonce).result, 'signature')?.status).toBe('fail');
  });

  it('the AK PEM and TPMT_PUBLIC must be the same key', () => {
    const p256 = files('ecc-p256');
    const pub = readFileSync(join(FIX, 'tpm2-tools-ecc-p384', 'ak.pub'));
    expect(() => akKeyFromInput({ tpmtPublic: pub, pem: p256.akPem })).toThrow(/different keys/);
    const k = akKeyFromInput({ tpmtPublic: readFileSync(join(FIX, 'tpm2-tools-ecc-p256', 'ak.pub')), pem: p256.akPem });
    expect(verifyQuoteSignature(p256.message, p256.signature, k).ok).toBe(true);
  });
});
