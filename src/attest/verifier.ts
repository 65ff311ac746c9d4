import { readFileSync } from 'node:fs';
import { AttestError } from './errors.js';
import { EVIDENCE_CODECS } from './codecs.js';
import { loadPolicy, parsePolicy, type LoadedPolicy, type VerifierPolicy } from './policy.js';
import { buildResult, type AttestationResult, type CheckResult } from './result.js';
import { earClaims, policyId, signEar } from '../verifier/ear.js';
import { VerifierState } from './state.js';
import { verifyEvidence } from './verify.js';
import type { ClockRecord, EnrollmentRecord, VerifyInput } from './types.js';
import type { LogKind } from './types.js';
import { readFileBounded } from '../fs/bounded-read.js';

export interface VerifierOptions {
  /** Verifier state directory (key, enrollments, clock records). */
  stateDir: string;
  /** Policy file path, or an inline policy (reference values then given as `reference`). */
  policyPath?: string;
  policy?: VerifierPolicy | LoadedPolicy;
}

/**
 * Where enrollments and clock records come from during one verification: the state directory by
 * default; the service passes values it fetched from its database (src/verifier) beforehand.
 */
export interface VerifyLookups {
  findEnrollment(akNameHex: string | undefined, akSpkiHash: string): EnrollmentRecord | undefined;
  previousClock(akSpkiHash: string): ClockRecord | undefined;
  recordClock(akSpkiHash: string, rec: ClockRecord): void;
}

export interface VerifyOutcome {
  result: AttestationResult;
  /** The result as an EAR JWT (draft-ietf-rats-ear, ES256 with the verifier key, kid and exp set). */
  ear(): Promise<string>;
}

/** A verifier: policy + state, verifying bundles and tpm2-tools quotes. */
export class Verifier {
  readonly state: VerifierState;
  readonly loaded: LoadedPolicy;

  constructor(opts: VerifierOptions) {
    this.state = new VerifierState(opts.stateDir);
    if (opts.policyPath) this.loaded = loadPolicy(opts.policyPath);
    else if (opts.policy && 'policy' in opts.policy) this.loaded = opts.policy;
    else this.loaded = { policy: parsePolicy(opts.policy ?? { schema: 'hyperenclave/verifier-policy', version: 1 }), trustedEkCas: [] };
  }

  private run(input: VerifyInput, nonce: Buffer, pre: CheckResult[], lookups?: VerifyLookups): VerifyOutcome {
    const key = this.state.key();
    const l = lookups ?? this.state;
    const result = verifyEvidence(input, {
      expectedNonce: nonce,
      policy: this.loaded,
      findEnrollment: (n, s) => l.findEnrollment(n, s),
      previousClock: (s) => l.previousClock(s),
      recordClock: (s, r) => l.recordClock(s, r),
      preChecks: pre,
      keyId: key.kid,
    });
    return this.outcome(result);
  }

  private outcome(result: AttestationResult): VerifyOutcome {
    return { result, ear: () => this.earJwt(result) };
  }

  /** Signs `result` as an EAR JWT with this verifier's key and policy id. */
  earJwt(result: AttestationResult): Promise<string> {
    const ttl = this.loaded.policy.resultTtlSeconds;
    return signEar(earClaims(result, { policyId: policyId(this.loaded), ...(ttl ? { ttlSeconds: ttl } : {}) }), this.state.key());
  }

  /** A contraindicated result for evidence that could not even be read. */
  private refuse(checks: CheckResult[], nonce?: Buffer): VerifyOutcome {
    const key = this.state.key();
    const result = buildResult(checks.map((c) => ({ requirement: 'required' as const, ...c })), { ...(nonce ? { nonce: nonce.toString('hex') } : {}), keyId: key.kid });
    return this.outcome(result);
  }

  /**
   * Verifies a bundle (parsed JSON or text) against the challenge this verifier issued.
   * `freshness` comes from the nonce store when the service checks single use and expiry.
   */
  verifyBundle(doc: unknown, challenge: Buffer, freshness?: CheckResult, lookups?: VerifyLookups): VerifyOutcome {
    let parsed = doc;
    if (typeof doc === 'string' || Buffer.isBuffer(doc)) {
      try {
        parsed = JSON.parse(doc.toString());
      } catch (e) {
        return this.refuse([{ name: 'evidence.format', status: 'fail', reason: `not JSON: ${(e as Error).message}` }], challenge);
      }
    }
    const prep = EVIDENCE_CODECS.bundle.import(parsed);
    const pre = [prep.check, ...(freshness ? [freshness] : [])];
    if (!prep.input) return this.refuse(pre, challenge);
    return this.run(prep.input, challenge, pre, lookups);
  }

  /** Verifies tpm2-tools' own quote files (message, signature, serialized PCRs) with the AK PEM. */
  verifyTpm2Tools(files: { message: Buffer; signature: Buffer; pcrs: Buffer; akPem: string | Buffer; eventLogs?: Partial<Record<LogKind, Buffer>> }, nonce: Buffer): VerifyOutcome {
    let input: VerifyInput;
    try {
      input = EVIDENCE_CODECS['tpm2-tools'].import(files).input;
    } catch (e) {
      return this.refuse([{ name: 'evidence.format', status: 'fail', reason: (e as Error).message }], nonce);
    }
    return this.run(input, nonce, [{ name: 'evidence.format', status: 'pass', reason: 'tpm2-tools quote files (message, signature, serialized PCRs)' }]);
  }

  /** Same, from file paths (the CLI's `verify --tpm2-quote-*`). */
  verifyTpm2ToolsFiles(paths: { message: string; signature: string; pcrs: string; akPem: string; eventLogs?: Partial<Record<LogKind, string>> }, nonceHex: string): VerifyOutcome {
    const read = (p: string, what: string): Buffer => {
      return readFileBounded(p, { what, kind: what === 'AK public key' ? 'key' : 'log' });
    };
    const logs: Partial<Record<LogKind, Buffer>> = {};
    for (const [k, p] of Object.entries(paths.eventLogs ?? {})) if (p) logs[k as LogKind] = read(p, `${k} event log`);
    return this.verifyTpm2Tools(
      { message: read(paths.message, 'quote message'), signature: read(paths.signature, 'quote signature'), pcrs: read(paths.pcrs, 'quote pcrs'), akPem: read(paths.akPem, 'AK public key'), eventLogs: logs },
      parseNonceHex(nonceHex),
    );
  }
}

export function parseNonceHex(s: string): Buffer {
  const t = s.trim().toLowerCase().replace(/^0x/, '');
  if (!/^([0-9a-f]{2}){1,64}$/.test(t)) throw new AttestError(`--nonce: expected 1 to 64 bytes of hex, got "${s.slice(0, 40)}"`, 2);
  return Buffer.from(t, 'hex');
}
