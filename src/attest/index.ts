/**
 * Attestation API for the CLI (`attest`, `verify`, `ak enroll`, `verifier enroll`, `verifier serve`)
 * and the boot flow. Everything here is a thin composition of the modules below.
 */
import { readEvidenceFile, type Evidence } from './evidence.js';
import type { CheckResult } from './result.js';
import { Verifier, parseNonceHex, type VerifyLookups, type VerifyOutcome } from './verifier.js';

export { AttestError, VerifyError } from './errors.js';
export { CLAIMS_SCHEME, claimsDigest, qualifyingData } from './binding.js';
export { buildEvidence, evidenceProblems, inputFromEvidence, parseEvidence, qualificationFor, readEvidenceFile, type BundleClaims, type Evidence, type EvidenceEnclave } from './evidence.js';
export { exportTpm2Tools, keylimeQuotes, bundleQualification, type Tpm2ToolsExport } from './export.js';
export { parsePcrsFile, writePcrsFile } from './tpm2-tools.js';
export { loadPolicy, parsePolicy, loadReferenceValues, type VerifierPolicy, type ReferenceValues, type LoadedPolicy } from './policy.js';
export { earClaims, signEar, verifyEar, validateEar, EAR_PROFILE, type EarClaims } from '../verifier/ear.js';
export { buildResult, formatResultTable, summarize, type AttestationResult, type CheckResult, type EarStatus } from './result.js';
export { verifyEvidence, verifyCertChain, type VerifyInput, type VerifyOptions } from './verify.js';
export { Verifier, parseNonceHex, type VerifierOptions, type VerifyOutcome } from './verifier.js';
export { VerifierState } from './state.js';
export { VerifierClient, enrollWithVerifier, type RemoteVerdict } from './remote.js';
export { NonceStore } from './nonces.js';
export { startVerifierService, type ServiceOptions, type RunningService } from './service.js';
export { startEnrollment, finishEnrollment, enrollmentRequest, answerEnrollment, type EnrollChallenge, type EnrollmentRecord, type EnrollStartRequest, type EnrollingTpm } from './enroll.js';
export { makeCredentialForEk, toTpm2ToolsCredentialFile, type Credential } from './credential.js';
export { verifierEnrollStartFiles, verifierEnrollFinishFile, akEnrollRequestFile, akEnrollAnswerFile, readJsonFile, writeJsonFile } from './files.js';
export { parseEnclaveQuote, expectedReportData, hakEventData, hakPcrValue, ENCLAVE_QUOTE_SIZE, DEFAULT_HAK_PCR } from './enclave-quote.js';

/**
 * `hyperenclave verify EVIDENCE.json [--policy P] [--nonce HEX]`: verifies a bundle file.
 * Without `nonceHex` the bundle's own nonce is used and `nonce.freshness` is reported as
 * skipped (freshness not established); with it, the quote must be bound to that challenge.
 */
export function verifyBundleFile(opts: { stateDir: string; policyPath?: string; evidencePath: string; nonceHex?: string; lookups?: (ev: Evidence) => VerifyLookups | undefined }): VerifyOutcome {
  const v = new Verifier({ stateDir: opts.stateDir, ...(opts.policyPath ? { policyPath: opts.policyPath } : {}) });
  const ev = readEvidenceFile(opts.evidencePath);
  let freshness: CheckResult;
  let challenge: Buffer;
  if (opts.nonceHex) {
    challenge = parseNonceHex(opts.nonceHex);
    freshness = { name: 'nonce.freshness', status: 'pass', reason: 'challenge supplied by the caller (--nonce)' };
  } else {
    challenge = Buffer.from(ev.nonce, 'hex');
    freshness = { name: 'nonce.freshness', status: 'skip', reason: 'no challenge supplied: the bundle\'s own nonce was used, freshness not established' };
  }
  return v.verifyBundle(ev, challenge, freshness, opts.lookups?.(ev));
}

/**
 * `hyperenclave verify --tpm2-quote-message m --tpm2-quote-signature s --tpm2-quote-pcrs p
 *  --ak-public ak.pem --nonce HEX [--eventlog FILE]`.
 */
export function verifyTpm2ToolsQuote(opts: { stateDir: string; policyPath?: string; message: string; signature: string; pcrs: string; akPem: string; nonceHex: string; eventlog?: string; runtimeLog?: string }): VerifyOutcome {
  const v = new Verifier({ stateDir: opts.stateDir, ...(opts.policyPath ? { policyPath: opts.policyPath } : {}) });
  return v.verifyTpm2ToolsFiles(
    { message: opts.message, signature: opts.signature, pcrs: opts.pcrs, akPem: opts.akPem, eventLogs: { ...(opts.eventlog ? { firmware: opts.eventlog } : {}), ...(opts.runtimeLog ? { runtime: opts.runtimeLog } : {}) } },
    opts.nonceHex,
  );
}

/** Exit code for a result: 0 affirming, 0 warning (printed), 4 contraindicated. */
export function exitCodeOf(outcome: VerifyOutcome): number {
  return outcome.result['ear.status'] === 'contraindicated' || outcome.result['ear.status'] === 'none' ? 4 : 0;
}

/** `hyperenclave verifier serve [--listen 127.0.0.1:PORT] [--policy P]`: runs until closed. */
export async function serveVerifier(
  opts: { stateDir: string; policyPath?: string; host?: string; port?: number; maxBodyBytes?: number } & Omit<import('./service.js').ServiceOptions, 'verifier' | 'host' | 'port' | 'maxBodyBytes'>,
): Promise<import('./service.js').RunningService> {
  const { startVerifierService } = await import('./service.js');
  const { stateDir, policyPath, ...rest } = opts;
  const verifier = new Verifier({ stateDir, ...(policyPath ? { policyPath } : {}) });
  return startVerifierService({ verifier, ...rest });
}

export { collectEvidence, type AttesterTpm, type CollectOptions } from './collect.js';
export { Tpm2ToolsAttester, tpm2ToolsAttesterTpm, tpm2ToolsEnrollingTpm, tpm2ToolsAvailable } from './tpm2-tools-attester.js';
export { clientAttesterTpm, clientEnrollingTpm } from './tpm-client-adapter.js';

/**
 * `hyperenclave attest --nonce HEX [--out evidence.json] [--tpm2-tools DIR] [--keylime FILE]`:
 * collects one bundle and writes it in the requested formats (atomically).
 */
export async function attestToFiles(
  tpm: import('./collect.js').AttesterTpm,
  opts: import('./collect.js').CollectOptions & { outJson?: string; tpm2ToolsDir?: string; keylimeOut?: string; akHash?: string },
): Promise<{ evidence: import('./evidence.js').Evidence; files: string[]; checkquote?: string[] }> {
  const { collectEvidence } = await import('./collect.js');
  const { exportTpm2Tools, keylimeQuotes } = await import('./export.js');
  const { writeJsonFile } = await import('./files.js');
  const evidence = await collectEvidence(tpm, opts);
  const files: string[] = [];
  let checkquote: string[] | undefined;
  if (opts.outJson) {
    writeJsonFile(opts.outJson, evidence);
    files.push(opts.outJson);
  }
  if (opts.tpm2ToolsDir) {
    const x = exportTpm2Tools(evidence, opts.tpm2ToolsDir, opts.akHash);
    files.push(...x.files);
    checkquote = x.commands;
  }
  if (opts.keylimeOut) {
    writeJsonFile(opts.keylimeOut, { schema: 'hyperenclave/keylime-quotes', version: 1, quotes: keylimeQuotes(evidence) });
    files.push(opts.keylimeOut);
  }
  return { evidence, files, ...(checkquote ? { checkquote } : {}) };
}
