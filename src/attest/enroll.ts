/**
 * AK enrollment by credential activation (TCG EK Credential Profile / TPM 2.0 Part 1, 24):
 *   attester  -> verifier: EK certificate chain, EK public (TPMT_PUBLIC), AK public (TPMT_PUBLIC)
 *   verifier:  EK cert chains to a trusted CA and certifies that EK public; the AK is a
 *              restricted, fixedTPM signing key; MakeCredential(EK, secret, AK name) -> challenge
 *   attester:  ActivateCredential on the TPM (only the TPM holding both EK and AK can) -> secret
 *   verifier:  secret matches -> the AK is recorded as enrolled (state dir, signed by the verifier key)
 */
import { createHash, createPublicKey, randomBytes, sign, timingSafeEqual, X509Certificate } from 'node:crypto';
import { fromB64 } from './bytes.js';
import { AttestError } from './errors.js';
import { akNameOf, parsePublic } from './tpm-structures.js';
import { makeCredentialForEk } from './credential.js';
import { platformKindOfEk, verifyCertChain } from './ek-chain.js';
import { checkEnrollmentId } from './state.js';
import type { EnrollmentRecord, PendingEnrollment } from './types.js';

export { checkEnrollmentId };
export type { EnrollmentRecord, PendingEnrollment };
import type { Verifier } from './verifier.js';

/** What the attester sends (file `request.json` or POST /enroll/start). */
export interface EnrollStartRequest {
  /** EK certificate first, then intermediates (PEM). */
  ekCertificates: string[];
  /** EK TPMT_PUBLIC (or TPM2B_PUBLIC), base64. */
  ekPublic: string;
  /** AK TPMT_PUBLIC (or TPM2B_PUBLIC), base64. */
  akPublic: string;
}

/** What the verifier answers (file `challenge.json`). */
export interface EnrollChallenge {
  schema: 'hyperenclave/ak-enroll-challenge';
  version: 1;
  id: string;
  /** TPM2B_ID_OBJECT, base64. */
  credentialBlob: string;
  /** TPM2B_ENCRYPTED_SECRET, base64. */
  encryptedSecret: string;
  expiresAt: string;
}

const ATTR = { fixedTPM: 1 << 1, fixedParent: 1 << 4, sensitiveDataOrigin: 1 << 5, restricted: 1 << 16, decrypt: 1 << 17, sign: 1 << 18 };
const CHALLENGE_TTL_MS = 10 * 60_000;

function spkiSha256(key: ReturnType<typeof createPublicKey>): string {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
}

/** Verifier, first half: checks the EK chain and the AK, returns the credential challenge (pending kept in the state directory). */
export function startEnrollment(v: Verifier, req: EnrollStartRequest): EnrollChallenge {
  const { challenge, pending } = prepareEnrollment(v, req);
  v.state.savePending(pending);
  return challenge;
}

/** First half without storage: the challenge for the attester and the pending record to keep (by the caller's store). */
export function prepareEnrollment(v: Verifier, req: EnrollStartRequest): { challenge: EnrollChallenge; pending: PendingEnrollment } {
  const badField =
    !req || typeof req !== 'object' ? '/'
    : !Array.isArray(req.ekCertificates) || !req.ekCertificates.every((c) => typeof c === 'string') ? '/ekCertificates'
    : typeof req.ekPublic !== 'string' ? '/ekPublic'
    : typeof req.akPublic !== 'string' ? '/akPublic'
    : undefined;
  if (badField) throw new AttestError(`enroll request: ${badField}: expected {ekCertificates: [PEM...], ekPublic: base64 TPMT_PUBLIC, akPublic: base64 TPMT_PUBLIC}`);
  if (!req.ekCertificates.length) throw new AttestError('enroll request: no EK certificate');
  const cas = v.loaded.trustedEkCas;
  if (!cas.length) throw new AttestError('enroll: the verifier policy lists no trusted EK CA (akProvenance.trustedEkCaFiles)', 4);
  const chain = verifyCertChain(req.ekCertificates, cas, new Date(), v.loaded.ekCrls);
  if (!chain.ok) throw new AttestError(`enroll: EK certificate: ${chain.reason}`, 4);

  const ekPub = parsePublic(fromB64(req.ekPublic, 'ekPublic'));
  const ekCert = new X509Certificate(req.ekCertificates[0]!);
  if (!ekCert.publicKey.equals(ekPub.pub.key)) throw new AttestError('enroll: EK public key is not the key the EK certificate certifies', 4);
  if (!(ekPub.pub.attributes & ATTR.decrypt) || !(ekPub.pub.attributes & ATTR.restricted)) throw new AttestError('enroll: EK is not a restricted decryption key', 4);

  const akBytes = fromB64(req.akPublic, 'akPublic');
  const ak = parsePublic(akBytes);
  const a = ak.pub.attributes;
  const missing = (['fixedTPM', 'fixedParent', 'sensitiveDataOrigin', 'restricted', 'sign'] as const).filter((k) => !(a & ATTR[k]));
  if (missing.length) throw new AttestError(`enroll: AK attributes lack ${missing.join(', ')} (must be a TPM-resident restricted signing key)`, 4);
  if (a & ATTR.decrypt) throw new AttestError('enroll: AK must not be a decryption key', 4);

  const akName = akNameOf(ak.tpmt);
  const kind = platformKindOfEk(req.ekCertificates, cas);
  const secret = randomBytes(32);
  const { credentialBlob, encryptedSecret } = makeCredentialForEk(ekPub.tpmt, secret, akName);
  const id = randomBytes(16).toString('hex');
  const expiresAt = new Date(Date.now() + CHALLENGE_TTL_MS).toISOString();
  const pending: PendingEnrollment = {
    id,
    secretSha256: createHash('sha256').update(secret).digest('hex'),
    akName: akName.toString('hex'),
    akSpkiSha256: spkiSha256(ak.pub.key),
    akPublic: ak.tpmt.toString('base64'),
    ekCertSha256: createHash('sha256').update(ekCert.raw).digest('hex'),
    ekCertSubject: ekCert.subject.replace(/\n/g, ', '),
    ...(kind.kind !== 'unknown' ? { platformKind: kind.kind, platformReason: kind.reason } : {}),
    expiresAt,
  };
  secret.fill(0);
  return { pending, challenge: { schema: 'hyperenclave/ak-enroll-challenge', version: 1, id, credentialBlob: credentialBlob.toString('base64'), encryptedSecret: encryptedSecret.toString('base64'), expiresAt } };
}

/** Verifier, second half: the attester's recovered secret; on match the AK is enrolled. */
export function finishEnrollment(v: Verifier, answer: { id: string; secret: string }): EnrollmentRecord {
  const record = completeEnrollment(v, v.state.takePending(String(answer.id)), answer);
  v.state.saveEnrollment(record);
  return record;
}

/** Second half without storage: `p` is the pending record the caller's store took (single use) for answer.id. */
export function completeEnrollment(v: Verifier, p: PendingEnrollment | undefined, answer: { id: string; secret: string }): EnrollmentRecord {
  if (!p) throw new AttestError(`enroll: no pending enrollment ${String(answer.id).slice(0, 40)} (unknown, or already answered)`, 4);
  if (Date.now() > Date.parse(p.expiresAt)) throw new AttestError(`enroll: challenge ${p.id} expired at ${p.expiresAt}`, 4);
  const got = createHash('sha256').update(fromB64(answer.secret, 'secret')).digest();
  if (!timingSafeEqual(got, Buffer.from(p.secretSha256, 'hex'))) throw new AttestError('enroll: the answer does not match the credential secret (AK and EK not in the same TPM?)', 4);
  const record: EnrollmentRecord = {
    schema: 'hyperenclave/ak-enrollment',
    version: 1,
    akName: p.akName,
    akSpkiSha256: p.akSpkiSha256,
    akPublic: p.akPublic,
    ekCertSha256: p.ekCertSha256,
    ...(p.ekCertSubject ? { ekCertSubject: p.ekCertSubject } : {}),
    ...(p.platformKind ? { platformKind: p.platformKind, ...(p.platformReason ? { platformReason: p.platformReason } : {}) } : {}),
    enrolledAt: new Date().toISOString(),
    method: 'credential-activation',
  };
  record.signature = sign('sha256', Buffer.from(JSON.stringify(record)), { key: v.state.key().privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  return record;
}

/** What the attester side of enrollment needs from its TPM (our TpmClient or tpm2-tools behind an adapter). */
export interface EnrollingTpm {
  /** EK certificate (PEM) first, then any intermediates the platform stores. */
  ekCertificates(): Promise<string[]>;
  /** EK TPMT_PUBLIC (or TPM2B_PUBLIC). */
  ekPublic(): Promise<Buffer>;
  /** AK TPMT_PUBLIC (or TPM2B_PUBLIC). */
  akPublic(): Promise<Buffer>;
  /** TPM2_ActivateCredential(AK, EK) on the blobs as MakeCredential produced them (with size prefixes). */
  activateCredential(credentialBlob: Buffer, encryptedSecret: Buffer): Promise<Buffer>;
}

/** Attester, first half (`hyperenclave ak enroll --out request.json`). */
export async function enrollmentRequest(tpm: EnrollingTpm): Promise<EnrollStartRequest> {
  return { ekCertificates: await tpm.ekCertificates(), ekPublic: (await tpm.ekPublic()).toString('base64'), akPublic: (await tpm.akPublic()).toString('base64') };
}

/** Attester, second half (`hyperenclave ak enroll --challenge challenge.json --out answer.json`). */
export async function answerEnrollment(tpm: EnrollingTpm, ch: EnrollChallenge): Promise<{ id: string; secret: string }> {
  const badField =
    !ch || typeof ch !== 'object' ? '/'
    : ch.schema !== 'hyperenclave/ak-enroll-challenge' ? '/schema'
    : (['id', 'credentialBlob', 'encryptedSecret'] as const).map((k) => (typeof ch[k] !== 'string' ? `/${k}` : '')).find(Boolean);
  if (badField) throw new AttestError(`enrollment challenge: ${badField}: expected a hyperenclave/ak-enroll-challenge document (id, credentialBlob, encryptedSecret)`);
  const secret = await tpm.activateCredential(fromB64(ch.credentialBlob, 'credentialBlob'), fromB64(ch.encryptedSecret, 'encryptedSecret'));
  return { id: ch.id, secret: secret.toString('base64') };
}
