import { describe, expect, it, afterAll } from 'vitest';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { buildEvidence, parseEvidence, type Evidence } from './evidence.js';
import { parsePcrsFile } from './tpm2-tools.js';
import { loadPolicy } from './policy.js';
import { Verifier } from './verifier.js';
import { akKeyFromInput } from './tpm-structures.js';
import { parseConfig } from '../config/index.js';
import { validatePolicy as validatePcrPolicy } from '../measure/policy.js';
import { buildContainer, signingKeyFromPem, verifyContainerBytes } from '../measure/container.js';
import { planMeasurement } from '../measure/plan.js';
import { loadPolicy as loadPcrPolicy } from '../measure/policy.js';
import { writeEventLog } from '../eventlog/write.js';
import { FUZZ_ITERATIONS, FUZZ_SEED, mutateBytes, mutateJson, rng } from '../../test/helpers/fuzz.js';

/**
 * Fuzzing of the readers that take operator or remote input as documents (issue 20): evidence,
 * verifier policy, configuration and PCR policy JSON, tpm2-tools quote files, PEM keys. The
 * oracle: every input is accepted or refused with a one-line HyperEnclaveError whose exit code
 * is not 1 (internal error); the verifier never throws (an HTTP 500), it answers with checks.
 */

const FIX = join(import.meta.dirname, '../../test/fixtures/attest/tpm2-tools-ecc-p256');
const quote = { msg: readFileSync(join(FIX, 'quote.msg')), sig: readFileSync(join(FIX, 'quote.sig')), pcrs: readFileSync(join(FIX, 'quote.pcrs')), pub: readFileSync(join(FIX, 'ak.pub')), pem: readFileSync(join(FIX, 'ak.pem'), 'utf8') };
const nonce = Buffer.from(readFileSync(join(FIX, 'nonce.hex'), 'utf8').trim(), 'hex');
const dir = mkdtempSync(join(tmpdir(), 'he-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hvPub = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
const signerPem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const img = verifyContainerBytes(
  buildContainer(randomBytes(4096), { arch: 'amd-svm', kind: 'raw', loadAddress: 0n, entryOffset: 0, coreSize: 4096, perCpuSize: 0, loadSize: 4096, featureMask: 0n, buildId: Buffer.alloc(20, 1) }, signingKeyFromPem(signerPem)),
  { banks: ['sha256'] },
);
const runtimeLog = writeEventLog({
  specId: { banks: ['sha256'] },
  events: planMeasurement(img, loadPcrPolicy('sha256-sha384'), ['sha256']).map((e) => ({ pcr: e.pcr, type: e.eventType, digests: e.digests as Record<string, Buffer>, data: e.data })),
});
const evidence: Evidence = buildEvidence(
  { nonce, platformKind: 'emulated', hypervisor: { containerDigest: img.header.imageSha256.toString('hex'), pcr: 12 }, enclaves: [{ backend: 'sev', quote: Buffer.alloc(496, 7).toString('base64'), userData: '00', keySlot: 6 }] },
  { quotes: [{ bank: 'sha256', attest: quote.msg, signature: quote.sig, values: parsePcrsFile(quote.pcrs).values.get('sha256')! }], ak: { tpmtPublic: quote.pub.subarray(2), pem: quote.pem }, eventLogs: { runtime: runtimeLog } },
);
const verifierPolicy = {
  schema: 'hyperenclave/verifier-policy',
  version: 1,
  checks: { 'eventlog.*': 'required', signature: 'required' },
  akProvenance: { trustedEkCaFiles: ['ca.pem'] },
  requiredPcrs: { sha256: [0, 12] },
};
writeFileSync(join(dir, 'ca.pem'), hvPub);
const config = { schema: 'hyperenclave/config', version: 1, platform: 'emulated', stateDir: '/tmp/x', image: '/tmp/x.img', pcrPolicy: 'sha256-sha384', memory: { hypervisorMiB: 64, epcMiB: 192 } };
const pcrPolicy = loadPcrPolicy('sha256-sha384');

/** Runs `fn` on mutated inputs; anything but a one-line HyperEnclaveError with exit ≠ 1 fails, naming the input. */
function fuzz<T>(name: string, mutate: (r: () => number) => T, fn: (input: T) => void): void {
  it(`${name} (seed ${FUZZ_SEED}, ${FUZZ_ITERATIONS} inputs)`, () => {
    const r = rng(FUZZ_SEED);
    for (let i = 0; i < FUZZ_ITERATIONS; i++) {
      const input = mutate(r);
      try {
        fn(input);
      } catch (e) {
        const show = Buffer.isBuffer(input) ? input.toString('hex').slice(0, 300) : String(input).slice(0, 300);
        if (!(e instanceof HyperEnclaveError) || e.exitCode === EXIT.INTERNAL) throw new Error(`${name}: input #${i} (${show}) threw ${(e as Error).stack}`);
        expect(e.message, show).not.toMatch(/\n/);
      }
    }
  });
}

describe('fuzzing the document and key readers', () => {
  const verifier = new Verifier({ stateDir: join(dir, 'verifier'), policy: { schema: 'hyperenclave/verifier-policy', version: 1 } as never });

  it('the seed evidence is read and judged (the fixture quote does not bind these claims)', () => {
    expect(parseEvidence(JSON.stringify(evidence)).quotes.length).toBe(1);
    const out = verifier.verifyBundle(evidence, nonce);
    // Present (its status follows the quote, which does not bind these claims: PCR-based checks skip).
    expect(out.result.checks.map((c) => c.name)).toContain('eventlog.event-data');
  });

  fuzz('evidence JSON (file reader)', (r) => mutateJson(evidence, r), (text) => void parseEvidence(text));

  fuzz(
    'evidence JSON (verifier, as POST /verify): always an answer, never an exception',
    (r) => mutateJson(evidence, r),
    (text) => {
      let doc: unknown;
      try {
        doc = JSON.parse(text);
      } catch {
        return; // the service answers 400 before the verifier
      }
      const out = verifier.verifyBundle(doc, nonce);
      if (!out.result.checks.length) throw new Error('no checks');
    },
  );

  fuzz(
    'verifier policy JSON (file, with the files it names)',
    (r) => mutateJson(verifierPolicy, r),
    (text) => {
      const p = join(dir, 'policy.json');
      writeFileSync(p, text);
      void loadPolicy(p);
    },
  );

  fuzz('configuration JSON', (r) => mutateJson(config, r), (text) => void parseConfig(text));

  fuzz('PCR policy JSON', (r) => mutateJson(pcrPolicy, r), (text) => {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return;
    }
    void validatePcrPolicy(doc);
  });

  fuzz(
    'tpm2-tools quote files (message, signature, PCRs, AK PEM): always an answer',
    (r) => {
      const which = Math.floor(r() * 4);
      return { which, bytes: mutateBytes([quote.msg, quote.sig, quote.pcrs, Buffer.from(quote.pem)][which]!, r) };
    },
    ({ which, bytes }) => {
      const files: { message: Buffer; signature: Buffer; pcrs: Buffer; akPem: string | Buffer } = { message: quote.msg, signature: quote.sig, pcrs: quote.pcrs, akPem: quote.pem };
      if (which === 0) files.message = bytes;
      else if (which === 1) files.signature = bytes;
      else if (which === 2) files.pcrs = bytes;
      else files.akPem = bytes;
      const out = verifier.verifyTpm2Tools(files, nonce);
      if (!out.result.checks.length) throw new Error('no checks');
    },
  );

  fuzz('PEM keys: AK public key', (r) => mutateBytes(Buffer.from(quote.pem), r).toString('latin1'), (pem) => void akKeyFromInput({ pem }));
  fuzz('PEM keys: image signing key', (r) => mutateBytes(Buffer.from(signerPem), r).toString('latin1'), (pem) => void signingKeyFromPem(pem));
});
