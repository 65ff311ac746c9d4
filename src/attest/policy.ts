import { readFileSync, existsSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { compileSchema, schemasDir } from '../schemas.js';
import { AttestError } from './errors.js';
import { jsonSyntaxProblem } from '../errors.js';
import type { Requirement } from './result.js';
import { readFileBounded, showPath } from '../platform/bounded-read.js';
import { loadUkiReference, type UkiRef } from './boot-checks.js';

export type BankName = 'sha1' | 'sha256' | 'sha384' | 'sha512' | 'sm3_256';

export interface VerifierPolicy {
  schema: 'hyperenclave/verifier-policy';
  version: 1;
  checks?: Record<string, Requirement>;
  requiredPcrs?: Partial<Record<BankName, number[]>>;
  signatureSchemes?: ('rsassa' | 'rsapss' | 'ecdsa' | 'sm2')[];
  referenceValues?: string;
  platform?: { requireReal?: boolean };
  drtm?: { required?: boolean };
  /** requireDmaProtection: every enclave quote's HAK-signed flags must say DMA protection was on. */
  hypervisor?: { pcr?: number; hakPcr?: number; requireDmaProtection?: boolean };
  /** UEFI measured boot: allowed UKIs (files of `hyperenclave firmware uki-reference`); runs the boot.* checks. */
  boot?: { ukiReferences?: string[]; allowStubPcrEvents?: boolean };
  enclaves?: {
    /** Allowed enclave identities (Keylime-style policy as data): an enclave must match one entry in every field it names. */
    allowed?: EnclaveIdentityPolicy[];
    /** Shorthand: every MRENCLAVE × MRSIGNER pair of these lists is an allowed identity. */
    allowedMrenclave?: string[];
    allowedMrsigner?: string[];
    allowedLaunchMeasurements?: string[];
    minCount?: number;
    launch?: { tikFile: string; allowedLaunchDigests: string[]; allowedPolicies?: number[] };
  };
  akProvenance?: { acceptEnrolled?: boolean; trustedEkCaFiles?: string[]; ekCrlFiles?: string[]; trustedAkKeys?: string[] };
  nonce?: { ttlSeconds?: number };
  resultTtlSeconds?: number;
}

/** One allowed enclave identity; absent fields are not constrained. */
export interface EnclaveIdentityPolicy {
  name?: string;
  mrenclave?: string;
  mrsigner?: string;
  isvProdId?: number;
  /** Lowest accepted ISVSVN. */
  minIsvSvn?: number;
  /** A DEBUG enclave (ATTRIBUTES bit 1) matches only with this set. */
  allowDebug?: boolean;
}

/** Reference values as the verifier uses them: allowed values per bank and PCR, lower-case hex. */
export interface ReferenceValues {
  /** bank -> PCR index -> allowed final values. */
  pcrs: Partial<Record<BankName, Record<number, string[]>>>;
  /** bank -> allowed digests of the hypervisor container event (in `hypervisorPcr`). */
  hypervisorDigests: Partial<Record<BankName, string[]>>;
  hypervisorPcr?: number;
  /** Where the values came from (file path), for reasons. */
  source: string;
}

/**
 * Checks that run as `expected` unless the policy says otherwise: a failure contraindicates,
 * a skip (the check could not run) gives at best `warning`.
 */
const DEFAULT_EXPECTED = ['boot.*', 'evidence.format', 'attest.magic', 'attest.type', 'signature', 'nonce', 'nonce.*', 'pcr.digest', 'pcr.selection', 'eventlog.*', 'reference.*', 'ak.provenance', 'enclave.*', 'platform.kind', 'clock'];

const RANK: Record<Requirement, number> = { off: 0, optional: 1, expected: 2, required: 3 };

/**
 * Floors the policy cannot go below. The quote's own integrity (format, signature, nonce, PCR
 * digest) is required; AK provenance, the replay (clock) check and the enclave chain run at
 * least as `expected`: switching AK provenance off is done by naming another trust anchor
 * (akProvenance.trustedAkKeys), not by lowering the check.
 */
const FLOORS: [string, Requirement][] = [
  ['evidence.format', 'required'],
  ['attest.magic', 'required'],
  ['attest.type', 'required'],
  ['signature', 'required'],
  ['nonce', 'required'],
  ['pcr.digest', 'required'],
  ['ak.provenance', 'expected'],
  ['clock', 'expected'],
  ['enclave.*', 'expected'],
];

export function floorOf(check: string): Requirement {
  for (const [k, v] of FLOORS) if (k === check || (k.endsWith('*') && check.startsWith(k.slice(0, -1)))) return v;
  return 'off';
}

export function maxRequirement(a: Requirement, b: Requirement): Requirement {
  return RANK[a] >= RANK[b] ? a : b;
}

/** How a check is treated: exact name, then the longest matching `prefix.*`, then defaults; never below its floor. */
export function requirementOf(policy: VerifierPolicy, check: string): Requirement {
  return maxRequirement(policyRequirement(policy, check), floorOf(check));
}

function policyRequirement(policy: VerifierPolicy, check: string): Requirement {
  const table = policy.checks ?? {};
  if (table[check]) return table[check]!;
  let best: { len: number; req: Requirement } | undefined;
  for (const [k, v] of Object.entries(table)) {
    if (k.endsWith('*') && check.startsWith(k.slice(0, -1)) && (!best || k.length > best.len)) best = { len: k.length, req: v };
  }
  if (best) return best.req;
  for (const k of DEFAULT_EXPECTED) if (k === check || (k.endsWith('*') && check.startsWith(k.slice(0, -1)))) return 'expected';
  return 'optional';
}

/** The allowed enclave identities a policy names (the `allowed` list, else the MRENCLAVE × MRSIGNER shorthand); undefined when it names none. */
export function allowedEnclaveIdentities(policy: VerifierPolicy): EnclaveIdentityPolicy[] | undefined {
  const e = policy.enclaves;
  if (!e) return undefined;
  if (e.allowed) return e.allowed;
  if (!e.allowedMrenclave && !e.allowedMrsigner) return undefined;
  const out: EnclaveIdentityPolicy[] = [];
  for (const mrenclave of e.allowedMrenclave ?? [undefined]) for (const mrsigner of e.allowedMrsigner ?? [undefined]) out.push({ ...(mrenclave ? { mrenclave } : {}), ...(mrsigner ? { mrsigner } : {}) });
  return out;
}

const validatePolicy = compileSchema<VerifierPolicy>('verifier-policy.schema.json');

export interface LoadedPolicy {
  policy: VerifierPolicy;
  reference?: ReferenceValues;
  /** PEM certificates of CAs an EK certificate may chain to. */
  trustedEkCas: string[];
  /** CRLs (PEM or DER) the EK chain is checked against (akProvenance.ekCrlFiles). */
  ekCrls?: Buffer[];
  /** SEV/CSV transport integrity key of the guest owner (policy.enclaves.launch.tikFile). */
  launchTik?: Buffer;
  /** The allowed UKIs of policy.boot.ukiReferences. */
  ukis?: UkiRef[];
  path?: string;
}

function readJson(path: string, what: string): unknown {
  const text = readFileBounded(path, { what, kind: 'document' }).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new AttestError(`${what} ${path}: not JSON (${jsonSyntaxProblem(e, text)})`);
  }
}

export function parsePolicy(doc: unknown, where = 'policy'): VerifierPolicy {
  const bad = validatePolicy(doc);
  if (bad) throw new AttestError(`${where}: ${bad}`);
  return doc as VerifierPolicy;
}

/** Reads a policy file and what it points to (reference values, EK CA certificates), paths relative to it. */
export function loadPolicy(path: string): LoadedPolicy {
  const policy = parsePolicy(readJson(path, 'policy'), path);
  const base = dirname(path);
  const rel = (p: string): string => (isAbsolute(p) ? p : join(base, p));
  const reference = policy.referenceValues ? loadReferenceValues(rel(policy.referenceValues)) : undefined;
  const trustedEkCas = (policy.akProvenance?.trustedEkCaFiles ?? []).map((f) => {
    if (typeof f !== 'string' || f === '') throw new AttestError(`policy ${path}: akProvenance.trustedEkCaFiles: an empty file name`);
    const p = rel(f);
    if (!existsSync(p)) throw new AttestError(`policy ${showPath(path)}: trustedEkCaFiles: ${showPath(p)} not found`, 3);
    return readFileBounded(p, { what: `policy ${path}: trustedEkCaFiles`, kind: 'key' }).toString('utf8');
  });
  const ekCrls = (policy.akProvenance?.ekCrlFiles ?? []).map((f) => {
    const p = rel(f);
    if (!existsSync(p)) throw new AttestError(`policy ${path}: ekCrlFiles: ${p} not found`, 3);
    return readFileSync(p);
  });
  let launchTik: Buffer | undefined;
  if (policy.enclaves?.launch) {
    const p = rel(policy.enclaves.launch.tikFile);
    if (!existsSync(p)) throw new AttestError(`policy ${showPath(path)}: enclaves.launch.tikFile: ${showPath(p)} not found`, 3);
    const raw = readFileBounded(p, { what: `policy ${path}: enclaves.launch.tikFile`, kind: 'key' });
    const t = raw.toString('utf8').trim();
    launchTik = /^[0-9a-fA-F]{32}$/.test(t) ? Buffer.from(t, 'hex') : raw;
    if (launchTik.length !== 16) throw new AttestError(`policy ${path}: ${p}: TIK must be 16 bytes (raw or 32 hex digits)`);
  }
  const ukis = (policy.boot?.ukiReferences ?? []).map((f) => loadUkiReference(rel(f)));
  return { policy, ...(reference ? { reference } : {}), trustedEkCas, ...(ekCrls.length ? { ekCrls } : {}), ...(launchTik ? { launchTik } : {}), ...(ukis.length ? { ukis } : {}), path };
}

const HEX = /^([0-9a-f]{2})+$/;
function hexList(v: unknown, where: string): string[] {
  const arr = Array.isArray(v) ? v : [v];
  return arr.map((x, i) => {
    if (typeof x !== 'string' || !HEX.test(x.toLowerCase().replace(/^0x/, ''))) throw new AttestError(`${where}[${i}]: not a hex digest`);
    return x.toLowerCase().replace(/^0x/, '');
  });
}

let validateReference: ((d: unknown) => string | undefined) | undefined | null;

/**
 * Reads firmware-tools' reference-values file. When schemas/reference-values.schema.json is
 * present the file is validated against it first.
 */
export function loadReferenceValues(path: string): ReferenceValues {
  const doc = readJson(path, 'reference values');
  if (validateReference === undefined) validateReference = existsSync(join(schemasDir(), 'reference-values.schema.json')) ? compileSchema('reference-values.schema.json') : null;
  if (validateReference) {
    const bad = validateReference(doc);
    if (bad) throw new AttestError(`reference values ${path}: ${bad}`);
  }
  return normalizeReferenceValues(doc, path);
}

/** Maps the reference-values document to the verifier's form (tolerates PCR values given as one hex or a list). */
export function normalizeReferenceValues(doc: unknown, source: string): ReferenceValues {
  if (!doc || typeof doc !== 'object') throw new AttestError(`reference values ${source}: not an object`);
  const d = doc as Record<string, unknown>;
  const out: ReferenceValues = { pcrs: {}, hypervisorDigests: {}, source };
  const pcrs = (d.pcrs ?? {}) as Record<string, Record<string, unknown>>;
  for (const [bank, byIndex] of Object.entries(pcrs)) {
    const m: Record<number, string[]> = {};
    for (const [idx, v] of Object.entries(byIndex ?? {})) {
      const i = Number(idx);
      if (!Number.isInteger(i) || i < 0 || i > 23) throw new AttestError(`reference values ${source}: pcrs.${bank}: bad PCR index "${idx}"`);
      m[i] = hexList(v, `reference values ${source}: pcrs.${bank}.${idx}`);
    }
    out.pcrs[bank as BankName] = m;
  }
  const hv = d.hypervisor as { pcr?: number; digests?: Record<string, unknown> } | undefined;
  if (hv) {
    if (typeof hv.pcr === 'number') out.hypervisorPcr = hv.pcr;
    for (const [bank, v] of Object.entries(hv.digests ?? {})) out.hypervisorDigests[bank as BankName] = hexList(v, `reference values ${source}: hypervisor.digests.${bank}`);
  }
  return out;
}
