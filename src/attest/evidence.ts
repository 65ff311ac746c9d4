import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { compileSchema } from '../schemas.js';
import { CLAIMS_SCHEME, claimsDigest, qualifyingData, type ClaimsInput, type PlatformKindClaim } from './binding.js';
import { fromB64, fromHex } from './bytes.js';
import { AttestError } from './errors.js';
import type { EvidenceBackendKind } from '../enclave/backends/registry.js';
import { jsonSyntaxProblem } from '../errors.js';
import type { BankName } from './policy.js';
import type { CheckResult } from './result.js';
import { parsePcrsFile } from './tpm2-tools.js';
import type { EnclaveInput, PcrValues, VerifyInput } from './types.js';
import { readFileBounded } from '../fs/bounded-read.js';

export interface EvidenceQuote {
  bank: BankName;
  attest: string;
  signature: string;
  pcrs: Record<string, string>;
}

export interface EvidenceEnclave {
  id?: string;
  backend: EvidenceBackendKind;
  /** The hypervisor's enclave quote (496 B), base64. */
  quote: string;
  /** What the enclave bound with the nonce into REPORTDATA, hex (may be empty). */
  userData: string;
  name?: string;
  launchMeasurement?: string;
  launch?: Record<string, string | number>;
  keySlot?: number;
}

/** The evidence bundle (schemas/evidence.schema.json). */
export interface Evidence {
  schema: 'hyperenclave/evidence';
  version: 1;
  createdAt?: string;
  nonce: string;
  claims: { scheme: typeof CLAIMS_SCHEME; platformKind?: PlatformKindClaim; claimsDigest?: string };
  quotes: EvidenceQuote[];
  ak: { public: string; pem: string; name?: string };
  akProvenance?: { ekCertificates?: string[]; enrollment?: Record<string, unknown> };
  eventLogs?: { firmware?: string; runtime?: string; drtm?: string };
  hypervisor?: { containerDigest?: string; buildId?: string; version?: string; pcr?: number; hakPcr?: number };
  enclaves?: EvidenceEnclave[];
}

const validateEvidence = compileSchema<Evidence>('evidence.schema.json');

/** undefined when the document is a valid evidence bundle, else every problem with its path. */
export function evidenceProblems(doc: unknown): string | undefined {
  return validateEvidence(doc);
}

export function parseEvidence(text: string, where = 'evidence'): Evidence {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new AttestError(`${where}: not JSON (${jsonSyntaxProblem(e, text)})`);
  }
  const bad = validateEvidence(doc);
  if (bad) throw new AttestError(`${where}: ${bad}`);
  checkEvidenceKeys(doc as Evidence, where);
  return doc as Evidence;
}

/**
 * The schema checks a PEM field's prefix only: each key must also decode, so a garbled one is a
 * named refusal (exit 6, or a failed evidence.format check over HTTP), not a library exception.
 */
export function checkEvidenceKeys(ev: Evidence, where = 'evidence'): void {
  const pem = (v: string | undefined, path: string): void => {
    if (v === undefined) return;
    try {
      createPublicKey(v);
    } catch (e) {
      throw new AttestError(`${where}: ${path}: not a PEM public key (${(e as Error).message.split('\n')[0]})`);
    }
  };
  pem(ev.ak?.pem, '/ak/pem');
}

export function readEvidenceFile(path: string): Evidence {
  return parseEvidence(readFileBounded(path, { what: '', kind: 'log' }).toString('utf8'), path);
}

/** Decodes a schema-valid bundle into what the verifier checks (bytes decoded, nothing trusted yet). */
export function inputFromEvidence(ev: Evidence): VerifyInput {
  checkEvidenceKeys(ev);
  const quotes = ev.quotes.map((q, i) => {
    const m = new Map<number, Buffer>();
    for (const [k, v] of Object.entries(q.pcrs)) m.set(Number(k), fromHex(v, `quotes[${i}].pcrs.${k}`));
    const pcrs: PcrValues = new Map([[q.bank, m]]);
    return { attest: fromB64(q.attest, `quotes[${i}].attest`), signature: fromB64(q.signature, `quotes[${i}].signature`), pcrs };
  });
  const enclaves: EnclaveInput[] = (ev.enclaves ?? []).map((e, i) => ({
    ...(e.id ? { id: e.id } : {}),
    backend: e.backend,
    quote: fromB64(e.quote, `enclaves[${i}].quote`),
    userData: fromHex(e.userData, `enclaves[${i}].userData`),
    ...(e.launchMeasurement ? { launchMeasurement: fromHex(e.launchMeasurement, `enclaves[${i}].launchMeasurement`) } : {}),
    ...(e.launch ? { launch: e.launch } : {}),
    ...(e.keySlot !== undefined ? { keySlot: e.keySlot } : {}),
  }));
  const logs: VerifyInput['eventLogs'] = {};
  for (const k of ['firmware', 'runtime', 'drtm'] as const) {
    const v = ev.eventLogs?.[k];
    if (v) logs[k] = fromB64(v, `eventLogs.${k}`);
  }
  return {
    source: 'bundle',
    binding: 'claims',
    ...(ev.claims.platformKind ? { platformKind: ev.claims.platformKind } : {}),
    quotes,
    ak: { tpmtPublic: fromB64(ev.ak.public, 'ak.public'), pem: ev.ak.pem },
    ...(ev.akProvenance?.ekCertificates ? { ekCertificates: ev.akProvenance.ekCertificates } : {}),
    eventLogs: logs,
    enclaves,
  };
}

/**
 * Parses an untrusted bundle (object or JSON text) for verification: a bundle that does not
 * match the schema or does not decode becomes a failed `evidence.format` check, not an exception.
 */
export function prepareEvidence(doc: unknown): { input?: VerifyInput; evidence?: Evidence; check: CheckResult } {
  const bad = validateEvidence(doc);
  if (bad) return { check: { name: 'evidence.format', status: 'fail', reason: bad.length > 300 ? bad.slice(0, 300) + '…' : bad } };
  try {
    const evidence = doc as Evidence;
    return { input: inputFromEvidence(evidence), evidence, check: { name: 'evidence.format', status: 'pass', reason: `hyperenclave/evidence v1, ${evidence.quotes.length} quote(s)` } };
  } catch (e) {
    return { check: { name: 'evidence.format', status: 'fail', reason: (e as Error).message } };
  }
}

/** tpm2-tools' own quote files as verifier input: extraData must equal the nonce (no claims bound). */
export function inputFromTpm2ToolsFiles(files: { message: Buffer; signature: Buffer; pcrs: Buffer; akPem: string | Buffer; eventLogs?: VerifyInput['eventLogs'] }): VerifyInput {
  const { values } = parsePcrsFile(files.pcrs);
  // The AK file may be a PEM or tpm2-tools' TPM2B_PUBLIC (`tpm2_createak -u`, needed for SM2).
  const akText = Buffer.isBuffer(files.akPem) ? files.akPem.toString('latin1') : files.akPem;
  const ak = akText.startsWith('-----BEGIN') ? { pem: akText } : { tpmtPublic: Buffer.isBuffer(files.akPem) ? files.akPem : Buffer.from(files.akPem, 'latin1') };
  return {
    source: 'tpm2-tools',
    binding: 'raw',
    quotes: [{ attest: files.message, signature: files.signature, pcrs: values }],
    ak,
    eventLogs: files.eventLogs ?? {},
    enclaves: [],
  };
}

/** The claims a bundle carries, decoded as they were bound into its quotes' qualifyingData. */
export function bundleClaims(ev: Evidence): ClaimsInput {
  return {
    ...(ev.claims.platformKind ? { platformKind: ev.claims.platformKind } : {}),
    enclaves: (ev.enclaves ?? []).map(enclaveBinding),
  };
}

function enclaveBinding(e: EvidenceEnclave): import('./binding.js').EnclaveBindingInput {
  return {
    backend: e.backend,
    quote: Buffer.from(e.quote, 'base64'),
    userData: Buffer.from(e.userData, 'hex'),
    ...(e.launchMeasurement ? { launchMeasurement: Buffer.from(e.launchMeasurement, 'hex') } : {}),
    ...(e.keySlot !== undefined ? { keySlot: e.keySlot } : {}),
  };
}

/** The claims digest of a bundle as its attester computed it (for reports; verifiers recompute). */
export function bundleClaimsDigest(ev: Evidence): string {
  return claimsDigest(bundleClaims(ev)).toString('hex');
}

/** Everything a bundle says besides the quotes, known before quoting (it determines extraData). */
export interface BundleClaims {
  nonce: Buffer;
  /** What the attester believes it runs on; optional and never trusted (the verifier derives the kind from the EK certificate). */
  platformKind?: PlatformKindClaim;
  hypervisor?: { containerDigest?: string; buildId?: string; version?: string; pcr?: number; hakPcr?: number };
  enclaves?: EvidenceEnclave[];
}

function claimsInputOf(c: BundleClaims): import('./binding.js').ClaimsInput {
  return {
    ...(c.platformKind ? { platformKind: c.platformKind } : {}),
    enclaves: (c.enclaves ?? []).map(enclaveBinding),
  };
}

/** The qualifyingData to pass to TPM2_Quote for these claims: SHA-256(nonce ‖ claimsDigest). */
export function qualificationFor(c: BundleClaims): Buffer {
  return qualifyingData(c.nonce, claimsInputOf(c));
}

/** Assembles and schema-checks a bundle from quotes already made with `qualificationFor(claims)`. */
export function buildEvidence(
  c: BundleClaims,
  parts: {
    quotes: { bank: BankName; attest: Buffer; signature: Buffer; values: Map<number, Buffer> }[];
    ak: { tpmtPublic: Buffer; pem: string; name?: Buffer };
    ekCertificates?: string[];
    enrollment?: Record<string, unknown>;
    eventLogs?: Partial<Record<'firmware' | 'runtime' | 'drtm', Buffer>>;
  },
): Evidence {
  const ci = claimsInputOf(c);
  const ev: Evidence = {
    schema: 'hyperenclave/evidence',
    version: 1,
    createdAt: new Date().toISOString(),
    nonce: c.nonce.toString('hex'),
    claims: {
      scheme: CLAIMS_SCHEME,
      ...(c.platformKind ? { platformKind: c.platformKind } : {}),
      claimsDigest: claimsDigest(ci).toString('hex'),
    },
    quotes: parts.quotes.map((q) => ({
      bank: q.bank,
      attest: q.attest.toString('base64'),
      signature: q.signature.toString('base64'),
      pcrs: Object.fromEntries([...q.values].sort((a, b) => a[0] - b[0]).map(([k, v]) => [String(k), v.toString('hex')])),
    })),
    ak: { public: parts.ak.tpmtPublic.toString('base64'), pem: parts.ak.pem, ...(parts.ak.name ? { name: parts.ak.name.toString('hex') } : {}) },
    ...(parts.ekCertificates || parts.enrollment ? { akProvenance: { ...(parts.ekCertificates ? { ekCertificates: parts.ekCertificates } : {}), ...(parts.enrollment ? { enrollment: parts.enrollment } : {}) } } : {}),
    ...(parts.eventLogs && Object.keys(parts.eventLogs).length ? { eventLogs: Object.fromEntries(Object.entries(parts.eventLogs).filter(([, v]) => v).map(([k, v]) => [k, v!.toString('base64')])) } : {}),
    ...(c.hypervisor ? { hypervisor: c.hypervisor } : {}),
    ...(c.enclaves?.length ? { enclaves: c.enclaves } : {}),
  };
  const bad = validateEvidence(ev);
  if (bad) throw new AttestError(`internal: built evidence does not match its schema: ${bad}`, 1);
  return ev;
}
