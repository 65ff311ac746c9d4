import { createPrivateKey, createPublicKey, generateKeyPairSync, createHash, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../platform/state.js';
import { compileSchema } from '../schemas.js';
import { AttestError } from './errors.js';
import { readFileBounded } from '../platform/bounded-read.js';

export type CheckStatus = 'pass' | 'fail' | 'skip';
/** required: must pass; expected: a failure contraindicates, a skip is neutral; optional: a failure warns; off: not run. */
export type Requirement = 'required' | 'expected' | 'optional' | 'off';
export type EarStatus = 'affirming' | 'warning' | 'contraindicated' | 'none';

/** One named check with a one-line reason (and optional diagnostics lines). */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  requirement?: Requirement;
  reason: string;
  details?: string[];
}

export interface AttestationResult {
  schema: 'hyperenclave/attestation-result';
  version: 1;
  eat_profile: string;
  iat: number;
  exp?: number;
  'ear.status': EarStatus;
  'ear.verifier-id': { developer: string; build: string; key?: string };
  'ear.trustworthiness-vector': Record<string, EarStatus>;
  nonce?: string;
  ak?: { name?: string; enrolled?: boolean };
  platformKind: 'real' | 'emulated' | 'unknown';
  checks: CheckResult[];
  firstFailure?: string;
}

export const EAT_PROFILE = 'tag:hyperenclave.dev,2026:ear-tpm-v1';

/** AR4SI trustworthiness claim each check contributes to. */
function claimOf(check: string): string {
  if (check === 'platform.kind') return 'hardware';
  if (check.startsWith('eventlog.') || check === 'reference.hypervisor' || check === 'reference.drtm') return 'executables';
  if (check.startsWith('enclave.') || check === 'reference.launch') return 'runtime-opaque';
  if (check.startsWith('reference.') || check === 'pcr.selection' || check === 'hypervisor.dma-protection') return 'configuration';
  return 'instance-identity';
}

const rank: Record<EarStatus, number> = { none: 0, affirming: 1, warning: 2, contraindicated: 3 };

/**
 * Overall and per-claim status. `affirming` only when every check the policy requires ran and
 * passed: a required check that fails or is skipped contraindicates; an expected check that
 * fails contraindicates and one that could not run (skip) gives at best `warning`; an optional
 * failure warns and an optional skip is neutral.
 */
export function summarize(checks: CheckResult[]): { status: EarStatus; vector: Record<string, EarStatus>; firstFailure?: string } {
  const vector: Record<string, EarStatus> = {};
  let status: EarStatus = 'affirming';
  let firstFailure: string | undefined;
  for (const c of checks) {
    if (c.requirement === 'off') continue;
    const req = c.requirement ?? 'required';
    let s: EarStatus;
    if (c.status === 'pass') s = 'affirming';
    else if (req === 'required') s = 'contraindicated';
    else if (c.status === 'skip') s = req === 'expected' ? 'warning' : 'affirming';
    else s = req === 'expected' ? 'contraindicated' : 'warning';
    const claim = claimOf(c.name);
    if (!vector[claim] || rank[s] > rank[vector[claim]!]) vector[claim] = s;
    if (rank[s] > rank[status]) status = s;
    if (s === 'contraindicated' && !firstFailure) firstFailure = `${c.name}: ${c.reason}`;
  }
  if (checks.length === 0) status = 'none';
  return { status, vector, ...(firstFailure ? { firstFailure } : {}) };
}

const validateResult = compileSchema<AttestationResult>('attestation-result.schema.json');

export function buildResult(checks: CheckResult[], extra: { nonce?: string; akName?: string; enrolled?: boolean; platformKind?: 'real' | 'emulated'; ttlSeconds?: number; keyId?: string }): AttestationResult {
  const { status, vector, firstFailure } = summarize(checks);
  const iat = Math.floor(Date.now() / 1000);
  const r: AttestationResult = {
    schema: 'hyperenclave/attestation-result',
    version: 1,
    eat_profile: EAT_PROFILE,
    iat,
    ...(extra.ttlSeconds ? { exp: iat + extra.ttlSeconds } : {}),
    'ear.status': status,
    'ear.verifier-id': { developer: 'hyperenclave-ts', build: process.env.npm_package_version ?? '0.1.0', ...(extra.keyId ? { key: extra.keyId } : {}) },
    'ear.trustworthiness-vector': vector,
    ...(extra.nonce ? { nonce: extra.nonce } : {}),
    ...(extra.akName !== undefined || extra.enrolled !== undefined ? { ak: { ...(extra.akName ? { name: extra.akName } : {}), ...(extra.enrolled !== undefined ? { enrolled: extra.enrolled } : {}) } } : {}),
    platformKind: extra.platformKind ?? 'unknown',
    checks,
    ...(firstFailure ? { firstFailure } : {}),
  };
  const bad = validateResult(r);
  if (bad) throw new AttestError(`internal: attestation result does not match its schema: ${bad}`, 1);
  return r;
}

/** Human table: one row per check, then the overall status. */
export function formatResultTable(r: AttestationResult): string {
  const rows = r.checks.map((c) => [c.name, c.status === 'pass' ? 'pass' : c.status === 'fail' ? 'FAIL' : 'skip', c.requirement ?? 'required', c.reason]);
  const head = ['check', 'result', 'policy', 'reason'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  const out = [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  for (const c of r.checks) for (const d of c.details ?? []) if (c.status === 'fail') out.push(`  ${c.name}: ${d}`);
  out.push('', `status: ${r['ear.status']}${r.firstFailure ? ` (${r.firstFailure})` : ''}`);
  return out.join('\n');
}

// --- the verifier's signing key and JWT (ES256) ---

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export interface VerifierKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** RFC 7638-style thumbprint (base64url SHA-256 of the canonical JWK). */
  kid: string;
}

function thumbprint(pub: KeyObject): string {
  const jwk = pub.export({ format: 'jwk' }) as { crv: string; kty: string; x: string; y: string };
  return b64url(createHash('sha256').update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })).digest());
}

/** Loads (or creates on first use, mode 0600) the verifier's P-256 key in `<dir>/verifier-key.pem`. */
export function loadOrCreateVerifierKey(dir: string): VerifierKey {
  const path = join(dir, 'verifier-key.pem');
  let privateKey: KeyObject;
  if (existsSync(path)) {
    try {
      privateKey = createPrivateKey(readFileBounded(path, { what: 'verifier key', kind: 'key' }));
    } catch (e) {
      throw new AttestError(`${path}: not a PEM private key`, undefined, { cause: e });
    }
    const d = privateKey.asymmetricKeyDetails;
    if (privateKey.asymmetricKeyType !== 'ec' || d?.namedCurve !== 'prime256v1') throw new AttestError(`${path}: verifier key must be ECDSA P-256`);
  } else {
    privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    writeFileAtomic(path, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    writeFileAtomic(join(dir, 'verifier-key.pub.pem'), createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }) as string);
  }
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, kid: thumbprint(publicKey) };
}
