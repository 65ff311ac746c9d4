/**
 * Key broker (as Trustee's KBS releases resources under a resource policy): the verifier holds
 * secrets, each under a policy naming the enclave identities it may go to; it releases one only
 * in answer to evidence that affirms under that policy, wrapped to the public key the enclave
 * generated and bound into its REPORTDATA (REPORTDATA[0..32] = SHA-256(nonce ‖ userData), userData
 * = the key's SubjectPublicKeyInfo, DER; P-256 or X25519). The wrap is a JWE (RFC 7516, compact,
 * ECDH-ES+A256KW with A256GCM) that the enclave opens with its private key, with any JOSE library.
 * Every request, released or refused, is audited in the database (secret_releases).
 *
 *   POST /kbs/resource {"resource": name, "evidence": bundle}  (nonce from POST /challenge)
 *     200 {"resource", "jwe", "ear"}  |  403 {"error", "failedCheck", "ear"}
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { CompactEncrypt } from 'jose';
import { AttestError } from '../attest/errors.js';
import { parseEnclaveQuote } from '../attest/enclave-quote.js';
import type { EnclaveIdentityPolicy, LoadedPolicy } from '../attest/policy.js';
import { Verifier } from '../attest/verifier.js';
import { compileSchema } from '../schemas.js';
import { verifyWithStore } from './engine.js';
import type { VerifierStore } from './store.js';

export interface KbsPolicyFile {
  schema: 'hyperenclave/kbs-policy';
  version: 1;
  resources: Record<string, { secretFile: string; allowed: EnclaveIdentityPolicy[]; requireReal?: boolean }>;
}

export interface KbsResource {
  name: string;
  secret: Buffer;
  allowed: EnclaveIdentityPolicy[];
  requireReal: boolean;
}

const validate = compileSchema<KbsPolicyFile>('kbs-policy.schema.json');

/** Loads a resource policy and the secrets it names (paths relative to the policy file). */
export function loadKbsPolicy(path: string): Map<string, KbsResource> {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new AttestError(`KBS policy ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : `not JSON: ${(e as Error).message}`}`, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 3 : 6);
  }
  const bad = validate(doc);
  if (bad) throw new AttestError(`KBS policy ${path}: ${bad}`, 6);
  const out = new Map<string, KbsResource>();
  for (const [name, r] of Object.entries((doc as KbsPolicyFile).resources)) {
    const p = isAbsolute(r.secretFile) ? r.secretFile : join(dirname(path), r.secretFile);
    if (!existsSync(p)) throw new AttestError(`KBS policy ${path}: resources.${name}.secretFile: ${p} not found`, 3);
    out.set(name, { name, secret: readFileSync(p), allowed: r.allowed, requireReal: r.requireReal ?? false });
  }
  return out;
}

export interface ReleaseOutcome {
  status: 200 | 403 | 404;
  body: Record<string, unknown>;
}

/** The enclave's wrapping key from its userData (SPKI DER of a P-256 or X25519 key). */
function wrappingKey(userDataHex: string): KeyObject {
  const k = createPublicKey({ key: Buffer.from(userDataHex, 'hex'), format: 'der', type: 'spki' });
  const ok = (k.asymmetricKeyType === 'ec' && k.asymmetricKeyDetails?.namedCurve === 'prime256v1') || k.asymmetricKeyType === 'x25519';
  if (!ok) throw new Error(`userData is a ${k.asymmetricKeyType} key; a P-256 or X25519 key is needed`);
  return k;
}

/**
 * Verifies `evidence` against the verifier's policy narrowed to this resource's enclave
 * identities (so a refused identity is named by the verifier's own check, e.g. enclave.mrenclave),
 * then wraps the secret to the key the (single) enclave bound with the nonce.
 */
export async function releaseResource(v: Verifier, store: VerifierStore, resources: Map<string, KbsResource>, req: { resource?: unknown; evidence?: unknown }): Promise<ReleaseOutcome> {
  const name = typeof req.resource === 'string' ? req.resource : '';
  const res = resources.get(name);
  if (!res) return { status: 404, body: { error: `no resource "${name.slice(0, 80)}"` } };
  const ev = req.evidence as { nonce?: unknown; enclaves?: { quote?: unknown; userData?: unknown }[] } | undefined;
  const nonce = ev && typeof ev.nonce === 'string' && /^([0-9a-f]{2}){8,64}$/.test(ev.nonce) ? ev.nonce : undefined;
  const audit = (outcome: 'released' | 'refused', reason: string, extra: { ak?: string; mrenclave?: string } = {}) =>
    store.auditRelease({ resource: name, outcome, reason, ...(extra.ak ? { akSpkiSha256: extra.ak } : {}), ...(extra.mrenclave ? { mrenclave: extra.mrenclave } : {}), ...(nonce ? { nonce } : {}) });
  if (!nonce) {
    await audit('refused', 'evidence has no hex nonce');
    return { status: 403, body: { error: 'evidence has no hex "nonce" (8-64 bytes)', failedCheck: 'evidence.format' } };
  }
  // The resource's identities replace the policy's enclave list; at least one enclave is required.
  const base: LoadedPolicy = v.loaded;
  const narrowed: LoadedPolicy = {
    ...base,
    policy: {
      ...base.policy,
      enclaves: { ...(base.policy.enclaves ?? {}), allowed: res.allowed, minCount: Math.max(1, base.policy.enclaves?.minCount ?? 1) },
      ...(res.requireReal ? { platform: { ...(base.policy.platform ?? {}), requireReal: true } } : {}),
    },
  };
  const rv = new Verifier({ stateDir: v.state.dir, policy: narrowed });
  const out = await verifyWithStore(rv, store, req.evidence, nonce);
  const ear = await out.ear();
  let mrenclave: string | undefined;
  try {
    const q = ev?.enclaves?.[0]?.quote;
    if (typeof q === 'string') mrenclave = parseEnclaveQuote(Buffer.from(q, 'base64')).body.mrenclave.toString('hex');
  } catch {
    /* reported by the verifier's enclave.quote-format check */
  }
  const who = { ...(out.akSpkiSha256 ? { ak: out.akSpkiSha256 } : {}), ...(mrenclave ? { mrenclave } : {}) };
  if (out.result['ear.status'] !== 'affirming') {
    const failed = out.result.checks.find((c) => c.status === 'fail') ?? out.result.checks.find((c) => c.status === 'skip' && c.requirement !== 'optional');
    const reason = failed ? `${failed.name}: ${failed.reason}` : `evidence ${out.result['ear.status']}`;
    await audit('refused', reason, who);
    return { status: 403, body: { error: `not released: ${reason}`, failedCheck: failed?.name ?? 'status', status: out.result['ear.status'], ear } };
  }
  if (ev?.enclaves?.length !== 1) {
    await audit('refused', 'exactly one enclave must ask for a resource', who);
    return { status: 403, body: { error: 'not released: the evidence must carry exactly one enclave (whose key receives the resource)', failedCheck: 'enclave.count', ear } };
  }
  let key: KeyObject;
  try {
    key = wrappingKey(String(ev.enclaves[0]!.userData ?? ''));
  } catch (e) {
    const reason = `enclave userData is not a wrapping key: ${(e as Error).message}`;
    await audit('refused', reason, who);
    return { status: 403, body: { error: `not released: ${reason}`, failedCheck: 'kbs.wrapping-key', ear } };
  }
  const jwe = await new CompactEncrypt(res.secret).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: name, cty: 'application/octet-stream' }).encrypt(key);
  await audit('released', 'evidence affirming under the resource policy', who);
  return { status: 200, body: { resource: name, jwe, ear } };
}
