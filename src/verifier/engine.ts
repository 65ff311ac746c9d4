/**
 * One verification against the shared store: the nonce is consumed atomically (any instance may
 * have issued it), the AK's enrollment and last clock record are fetched before the synchronous
 * checks run (src/attest/verify.ts), and the new clock record and the verdict are written after.
 */
import { createHash } from 'node:crypto';
import { AttestError } from '../attest/errors.js';
import { completeEnrollment, checkEnrollmentId, prepareEnrollment, type EnrollChallenge, type EnrollmentRecord, type EnrollStartRequest } from '../attest/enroll.js';
import type { CheckResult } from '../attest/result.js';
import { akKeyFromInput } from '../attest/tpm-structures.js';
import type { ClockRecord } from '../attest/types.js';
import type { Verifier, VerifyOutcome } from '../attest/verifier.js';
import type { NonceState, VerifierStore } from './store.js';

export function freshnessCheck(state: NonceState): CheckResult {
  return state === 'fresh'
    ? { name: 'nonce.freshness', status: 'pass', reason: 'challenge issued by this verifier (any instance), unexpired, first use' }
    : { name: 'nonce.freshness', status: 'fail', reason: state === 'used' ? 'challenge already used (replayed evidence)' : state === 'expired' ? 'challenge expired' : 'challenge not issued by this verifier' };
}

/** Recently seen AK encodings -> SPKI hash (importing a key costs more than the rest of the lookup). */
const spkiCache = new Map<string, string>();
const SPKI_CACHE_MAX = 20_000;

/** SHA-256 of the AK's SPKI from a bundle's `ak` (PEM or TPMT_PUBLIC), or undefined if unusable. */
export function akSpkiOfBundle(doc: unknown): string | undefined {
  const ak = doc && typeof doc === 'object' ? (doc as { ak?: { public?: unknown; pem?: unknown } }).ak : undefined;
  if (!ak || typeof ak !== 'object') return undefined;
  const cacheKey = `${typeof ak.public === 'string' ? ak.public : ''}|${typeof ak.pem === 'string' ? ak.pem : ''}`;
  const hit = spkiCache.get(cacheKey);
  if (hit) return hit;
  try {
    const pub = typeof ak.public === 'string' ? Buffer.from(ak.public, 'base64') : undefined;
    const spki = akKeyFromInput({ ...(pub?.length ? { tpmtPublic: pub } : {}), ...(typeof ak.pem === 'string' ? { pem: ak.pem } : {}) }).spkiSha256;
    if (spkiCache.size >= SPKI_CACHE_MAX) spkiCache.delete(spkiCache.keys().next().value!);
    spkiCache.set(cacheKey, spki);
    return spki;
  } catch {
    return undefined;
  }
}

export interface StoredOutcome extends VerifyOutcome {
  akSpkiSha256?: string;
  nonceState: NonceState;
  /** Seconds spent per phase (for metrics: where the time goes). */
  phases: Record<'ak' | 'begin' | 'checks' | 'record', number>;
}

/** Issues a challenge recorded in the store (single use, expiring). */
export async function issueChallenge(store: VerifierStore, ttlMs: number, nonce: string): Promise<{ nonce: string; expiresAt: string }> {
  const expires = Date.now() + ttlMs;
  await store.issueNonce(nonce, expires);
  return { nonce, expiresAt: new Date(expires).toISOString() };
}

/** Verifies a bundle answering `nonceHex` with state from `store`; records clock and verdict. */
export async function verifyWithStore(v: Verifier, store: VerifierStore, doc: unknown, nonceHex: string, meta: { hostId?: string } = {}): Promise<StoredOutcome> {
  let t = process.hrtime.bigint();
  const lap = (): number => {
    const n = process.hrtime.bigint();
    const d = Number(n - t) / 1e9;
    t = n;
    return d;
  };
  const ak = akSpkiOfBundle(doc);
  const akS = lap();
  const { nonceState, enrollment, clock: prevClock } = await store.beginVerification(nonceHex, ak);
  const beginS = lap();
  let newClock: { ak: string; rec: ClockRecord } | undefined;
  const out = v.verifyBundle(doc, Buffer.from(nonceHex, 'hex'), { ...freshnessCheck(nonceState), requirement: 'required' }, {
    findEnrollment: (name, spki) => (enrollment && spki === ak && (!name || enrollment.akName === name) ? enrollment : undefined),
    previousClock: (spki) => (spki === ak ? prevClock : undefined),
    recordClock: (spki, rec) => void (newClock = { ak: spki, rec }),
  });
  const checksS = lap();
  // A replayed or unknown challenge must not move the clock record either.
  await store.finishVerification(newClock && nonceState === 'fresh' ? newClock : undefined, {
    at: Date.now(),
    instance: store.instance,
    ...(meta.hostId ? { hostId: meta.hostId } : {}),
    ...(ak ? { akSpkiSha256: ak } : {}),
    nonce: nonceHex,
    status: out.result['ear.status'],
    ...(out.result.firstFailure ? { firstFailure: out.result.firstFailure } : {}),
  });
  return { ...out, nonceState, ...(ak ? { akSpkiSha256: ak } : {}), phases: { ak: akS, begin: beginS, checks: checksS, record: lap() } };
}

export async function startEnrollmentStored(v: Verifier, store: VerifierStore, req: EnrollStartRequest): Promise<EnrollChallenge> {
  const { challenge, pending } = prepareEnrollment(v, req);
  await store.savePending(pending);
  return challenge;
}

export async function finishEnrollmentStored(v: Verifier, store: VerifierStore, answer: { id: string; secret: string }): Promise<EnrollmentRecord> {
  checkEnrollmentId(answer.id);
  const record = completeEnrollment(v, await store.takePending(answer.id), answer);
  await store.saveEnrollment(record);
  return record;
}

/** Enrollments made offline (`verifier enroll`, state directory files) become visible to the service. */
export async function importFileEnrollments(v: Verifier, store: VerifierStore): Promise<number> {
  let n = 0;
  for (const r of v.state.listEnrollments()) {
    const have = await store.findEnrollment(r.akSpkiSha256);
    if (have && have.enrolledAt >= r.enrolledAt) continue;
    await store.saveEnrollment(r);
    n++;
  }
  return n;
}

export const sha256hex = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
export { AttestError };
