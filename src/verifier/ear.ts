/**
 * Attestation results as EAR (draft-ietf-rats-ear, JSON, profile tag:github.com,2023:veraison/ear)
 * JWTs signed with `jose`: one submodule ("hyperenclave") with ear.status, the AR4SI
 * trustworthiness vector as integer claims and the appraisal policy id; the named checks ride
 * along inside the submodule as a private claim ("hyperenclave.checks"), each mapped to the
 * trust-vector claim it contributes to. schemas/ear.schema.json is written from the draft.
 */
import { createHash, webcrypto, type KeyObject } from 'node:crypto';
import { SignJWT, exportJWK, jwtVerify, createLocalJWKSet, type JWK, type JSONWebKeySet, type JWTPayload } from 'jose';
import { compileSchema } from '../schemas.js';
import type { AttestationResult, CheckResult, EarStatus } from '../attest/result.js';
import type { VerifierKey } from '../attest/result.js';
import type { LoadedPolicy } from '../attest/policy.js';
import { AttestError } from '../attest/errors.js';

export const EAR_PROFILE = 'tag:github.com,2023:veraison/ear';
export const EAR_SUBMOD = 'hyperenclave';

export type TrustClaimName = 'instance-identity' | 'configuration' | 'executables' | 'file-system' | 'hardware' | 'runtime-opaque' | 'storage-opaque' | 'sourced-data';

export interface EarAppraisal {
  'ear.status': EarStatus;
  'ear.trustworthiness-vector'?: Partial<Record<TrustClaimName, number>>;
  'ear.appraisal-policy-id'?: string;
  'hyperenclave.checks'?: (CheckResult & { claim: TrustClaimName })[];
  'hyperenclave.platform-kind'?: string;
  'hyperenclave.ak-name'?: string;
  'hyperenclave.first-failure'?: string;
}

export interface EarClaims extends JWTPayload {
  eat_profile: typeof EAR_PROFILE;
  iat: number;
  exp?: number;
  'ear.verifier-id': { build: string; developer: string };
  eat_nonce?: string;
  submods: Record<string, EarAppraisal>;
}

/** The AR4SI claim each named check contributes to. */
export function trustClaimOf(check: string): TrustClaimName {
  if (check === 'platform.kind' || check === 'ek.certificate') return 'hardware';
  if (check.startsWith('eventlog.') || check === 'reference.hypervisor' || check === 'reference.drtm') return 'executables';
  if (check.startsWith('enclave.') || check.startsWith('reference.enclave') || check.startsWith('reference.sev') || check === 'reference.launch') return 'runtime-opaque';
  if (check.startsWith('reference.') || check === 'pcr.selection' || check === 'clock') return 'configuration';
  return 'instance-identity';
}

/** Checks whose failure means the evidence failed cryptographic validation (AR4SI value 99). */
const CRYPTO = new Set(['attest.magic', 'attest.type', 'signature', 'nonce', 'pcr.digest', 'enclave.quote-format', 'enclave.quote-signature', 'enclave.reportdata-nonce']);

/**
 * AR4SI values (draft-ietf-rats-ar4si §2.3): 2 = the claim's affirming value (trustworthy
 * instance, approved config, approved runtime, genuine hardware, ...), 32 = its warning value
 * (unsafe config/runtime/hardware, isolated memory), 96 = its contraindicated value, 97 =
 * unrecognized instance (AK not enrolled), 99 = cryptographic validation failed, 0 = no claim.
 */
function tier(claim: TrustClaimName, checks: CheckResult[]): number | undefined {
  let worst: number | undefined;
  const bump = (v: number): void => {
    const rank = (x: number): number => (x >= 96 ? 3 : x >= 32 ? 2 : x >= 2 ? 1 : 0);
    if (worst === undefined || rank(v) > rank(worst) || (rank(v) === rank(worst) && v > worst)) worst = v;
  };
  for (const c of checks) {
    if (c.requirement === 'off') continue;
    const req = c.requirement ?? 'required';
    if (c.status === 'pass') bump(2);
    else if (c.status === 'skip') {
      if (req === 'required') bump(claim === 'instance-identity' && c.name === 'ak.provenance' ? 97 : 96);
    } else if (req === 'optional') bump(32);
    else bump(CRYPTO.has(c.name) || c.name === 'nonce.freshness' ? 99 : c.name === 'ak.provenance' ? 97 : 96);
  }
  return worst;
}

const policyIds = new WeakMap<LoadedPolicy, string>();
/** The policy's identity: SHA-256 of its canonical JSON (and of the reference values it loaded). */
export function policyId(p: LoadedPolicy): string {
  let id = policyIds.get(p);
  if (!id) {
    const h = createHash('sha256').update(JSON.stringify(p.policy));
    if (p.reference) h.update(JSON.stringify(p.reference));
    id = `urn:hyperenclave:policy:sha256:${h.digest('hex')}`;
    policyIds.set(p, id);
  }
  return id;
}

/** EAR claims for one verification result. */
export function earClaims(r: AttestationResult, opts: { policyId?: string; ttlSeconds?: number; build?: string } = {}): EarClaims {
  const byClaim = new Map<TrustClaimName, CheckResult[]>();
  for (const c of r.checks) {
    const k = trustClaimOf(c.name);
    if (!byClaim.has(k)) byClaim.set(k, []);
    byClaim.get(k)!.push(c);
  }
  const vector: Partial<Record<TrustClaimName, number>> = {};
  for (const [k, list] of byClaim) {
    const t = tier(k, list);
    if (t !== undefined) vector[k] = t;
  }
  const appraisal: EarAppraisal = {
    'ear.status': r['ear.status'],
    'ear.trustworthiness-vector': vector,
    ...(opts.policyId ? { 'ear.appraisal-policy-id': opts.policyId } : {}),
    'hyperenclave.checks': r.checks.map((c) => ({ ...c, claim: trustClaimOf(c.name) })),
    'hyperenclave.platform-kind': r.platformKind,
    ...(r.ak?.name ? { 'hyperenclave.ak-name': r.ak.name } : {}),
    ...(r.firstFailure ? { 'hyperenclave.first-failure': r.firstFailure } : {}),
  };
  const ttl = opts.ttlSeconds ?? (r.exp ? r.exp - r.iat : undefined);
  const claims: EarClaims = {
    eat_profile: EAR_PROFILE,
    iat: r.iat,
    ...(ttl ? { exp: r.iat + ttl } : {}),
    'ear.verifier-id': { developer: 'hyperenclave-ts', build: opts.build ?? r['ear.verifier-id'].build },
    // EAT's JSON nonce: the challenge bytes, base64url.
    ...(r.nonce ? { eat_nonce: Buffer.from(r.nonce, 'hex').toString('base64url') } : {}),
    submods: { [EAR_SUBMOD]: appraisal },
  };
  const bad = validateEar(claims);
  if (bad) throw new AttestError(`internal: EAR claims do not match schemas/ear.schema.json: ${bad}`, 1);
  return claims;
}

export const validateEar = compileSchema<EarClaims>('ear.schema.json');

/** The verifier key as a JWK with kid, alg and use (for the JWKS endpoint). */
export async function publicJwk(key: VerifierKey): Promise<JWK> {
  return { ...(await exportJWK(key.publicKey)), kid: key.kid, alg: 'ES256', use: 'sig' };
}

/** The verifier key as a WebCrypto key, imported once (jose signs through WebCrypto; a KeyObject is re-imported on every call). */
const cryptoKeys = new WeakMap<KeyObject, Promise<webcrypto.CryptoKey>>();
function signingKey(k: KeyObject): Promise<webcrypto.CryptoKey> {
  let c = cryptoKeys.get(k);
  if (!c) {
    c = webcrypto.subtle.importKey('pkcs8', k.export({ type: 'pkcs8', format: 'der' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    cryptoKeys.set(k, c);
  }
  return c;
}

/** Signs EAR claims as a compact JWS (ES256, typ JWT, kid = the key's RFC 7638 thumbprint). */
export async function signEar(claims: EarClaims, key: VerifierKey): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: key.kid }).sign(await signingKey(key.privateKey));
}

/** Verifies an EAR JWT against a JWKS (or one public key): signature, kid, exp, profile, schema. */
export async function verifyEar(jwt: string, keys: JSONWebKeySet | KeyObject, opts: { currentDate?: Date } = {}): Promise<EarClaims> {
  const check = { algorithms: ['ES256'], ...(opts.currentDate ? { currentDate: opts.currentDate } : {}) };
  let payload: JWTPayload;
  try {
    payload = ('keys' in keys ? await jwtVerify(jwt, createLocalJWKSet(keys), check) : await jwtVerify(jwt, keys, check)).payload;
  } catch (e) {
    throw new AttestError(`EAR JWT: ${(e as Error).message}`, 4);
  }
  const bad = validateEar(payload);
  if (bad) throw new AttestError(`EAR JWT: claims do not match the EAR schema: ${bad}`, 4);
  return payload as EarClaims;
}
