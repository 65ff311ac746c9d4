import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttestError } from './errors.js';
import { parsePublic, parseQuoteAttest, parseSignature } from './tpm-structures.js';
import { parsePcrsFile } from './tpm2-tools.js';
import { prepareEvidence } from './evidence.js';
import { loadPolicy } from './policy.js';
import { verifyTpm2ToolsQuote, exitCodeOf } from './index.js';

const FIX = join(import.meta.dirname, '../../test/fixtures/attest');
const samples = {
  attest: readFileSync(join(FIX, 'tpm2-tools-ecc-p256/quote.msg')),
  sig: readFileSync(join(FIX, 'tpm2-tools-rsa-rsassa/quote.sig')),
  pub: readFileSync(join(FIX, 'tpm2-tools-rsa-rsassa/ak.pub')),
  pcrs: readFileSync(join(FIX, 'tpm2-tools-ecc-p256/quote.pcrs')),
};

/** Random mutations (bit flips, truncations, random bytes): only AttestError may escape. */
function fuzz(name: string, seed: Buffer, fn: (b: Buffer) => unknown): void {
  it(`${name}: 3000 mutated inputs give a typed error or a value, never a crash`, () => {
    for (let i = 0; i < 3000; i++) {
      let b: Buffer;
      const r = i % 4;
      if (r === 0) b = randomBytes(Math.floor(Math.random() * (seed.length + 8)));
      else if (r === 1) b = seed.subarray(0, Math.floor(Math.random() * seed.length));
      else {
        b = Buffer.from(seed);
        for (let k = 0; k < 1 + (i % 5); k++) b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
      }
      try {
        fn(b);
      } catch (e) {
        if (!(e instanceof AttestError)) throw new Error(`${name}: ${b.toString('hex')} threw ${(e as Error).stack}`);
        expect((e as Error).message).not.toMatch(/\n/);
      }
    }
  });
}

describe('parsers under hostile input', () => {
  fuzz('TPMS_ATTEST', samples.attest, parseQuoteAttest);
  fuzz('TPMT_SIGNATURE', samples.sig, parseSignature);
  fuzz('TPMT_PUBLIC (RSA)', samples.pub, parsePublic);
  fuzz('TPMT_PUBLIC (ECC)', readFileSync(join(FIX, 'tpm2-tools-ecc-p384/ak.pub')), parsePublic);
  fuzz('serialized PCRs', samples.pcrs, parsePcrsFile);

  it('evidence that is not a bundle becomes a failed evidence.format check', () => {
    for (const doc of [null, 42, 'x', [], {}, { schema: 'hyperenclave/evidence', version: 2 }, { schema: 'hyperenclave/evidence', version: 1, nonce: 'zz' }]) {
      const p = prepareEvidence(doc);
      expect(p.check).toMatchObject({ name: 'evidence.format', status: 'fail' });
      expect(p.input).toBeUndefined();
    }
  });
});

describe('policy files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'attest-policy-'));
  it('one-line errors name the file and the field', () => {
    const p = join(dir, 'p.json');
    writeFileSync(p, JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, checks: { signature: 'maybe' } }));
    expect(() => loadPolicy(p)).toThrow(/p\.json: \/checks\/signature: must be one of "required", "expected", "optional", "off"/);
    writeFileSync(p, '{');
    expect(() => loadPolicy(p)).toThrow(/not JSON/);
    expect(() => loadPolicy(join(dir, 'missing.json'))).toThrow(/not found/);
    writeFileSync(p, JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, referenceValues: 'ref.json' }));
    writeFileSync(join(dir, 'ref.json'), JSON.stringify({ schema: 'hyperenclave/reference-values', version: 1, pcrs: { sha256: { '99': 'aa' } } }));
    expect(() => loadPolicy(p)).toThrow(/ref\.json: \/pcrs\/sha256: .*property name/);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('CLI-facing verifyTpm2ToolsQuote (tpm2-tools files by path)', () => {
  it('verifies tpm2_quote output and maps contraindicated to exit code 4', () => {
    const d = join(FIX, 'tpm2-tools-ecc-p256');
    const state = mkdtempSync(join(tmpdir(), 'attest-cli-'));
    const args = { stateDir: state, message: join(d, 'quote.msg'), signature: join(d, 'quote.sig'), pcrs: join(d, 'quote.pcrs'), akPem: join(d, 'ak.pem') };
    const ok = verifyTpm2ToolsQuote({ ...args, nonceHex: readFileSync(join(d, 'nonce.hex'), 'utf8') });
    expect(ok.result.checks.find((c) => c.name === 'signature')?.status).toBe('pass');
    const bad = verifyTpm2ToolsQuote({ ...args, nonceHex: 'aa'.repeat(16) });
    expect(exitCodeOf(bad)).toBe(4);
    expect(() => verifyTpm2ToolsQuote({ ...args, nonceHex: 'xyz' })).toThrow(/--nonce/);
    expect(() => verifyTpm2ToolsQuote({ ...args, message: join(d, 'nope'), nonceHex: 'aa' })).toThrow(/quote message .*not found/);
    rmSync(state, { recursive: true, force: true });
  });
});
