import { readFileSync } from 'node:fs';
import { compileSchema } from '../schemas.js';
import { EXIT, HyperEnclaveError, jsonSyntaxProblem } from '../errors.js';
import { readFileBounded } from '../fs/bounded-read.js';
import { type HashAlgName, hashAlgByName, nodeSupports } from '../tpm/alg.js';
import { PolicyError } from './errors.js';

/** What a policy event measures (docs/pcr-policy.md). */
export type MeasureKind = 'image' | 'header' | 'signer';

export interface PolicyEvent {
  pcr: number;
  measure: MeasureKind;
  /** TCG event type name or number; default EV_IPL. */
  eventType?: string | number;
}

export interface PcrPolicy {
  schema: 'hyperenclave/pcr-policy';
  version: 1;
  name: string;
  description?: string;
  banks: HashAlgName[];
  events: PolicyEvent[];
}

/** The TCG PC Client event types a policy may name. */
export const EVENT_TYPE_CODES: Record<string, number> = {
  EV_ACTION: 0x05,
  EV_EVENT_TAG: 0x06,
  EV_COMPACT_HASH: 0x0c,
  EV_IPL: 0x0d,
  EV_NONHOST_CODE: 0x0f,
  EV_NONHOST_CONFIG: 0x10,
  EV_NONHOST_INFO: 0x11,
};

export const DEFAULT_EVENT_TYPE = 'EV_IPL';

export function eventTypeCode(t: string | number | undefined): number {
  if (t === undefined) return EVENT_TYPE_CODES[DEFAULT_EVENT_TYPE]!;
  if (typeof t === 'number') return t;
  const c = EVENT_TYPE_CODES[t];
  if (c === undefined) throw new PolicyError(`pcr policy: unknown event type "${t}"`);
  return c;
}

export const BUILTIN_POLICIES: Readonly<Record<string, PcrPolicy>> = {
  'hyperenclave-sm3': {
    schema: 'hyperenclave/pcr-policy',
    version: 1,
    name: 'hyperenclave-sm3',
    description: 'As HyperEnclave does: an SM3 digest of the image into PCR 12. Needs a TPM with an active SM3 bank.',
    banks: ['sm3_256'],
    events: [{ pcr: 12, measure: 'image', eventType: 'EV_IPL' }],
  },
  'sha256-sha384': {
    schema: 'hyperenclave/pcr-policy',
    version: 1,
    name: 'sha256-sha384',
    description: 'Default for TPMs without SM3 (swtpm): image, header (configuration) and signer identity into PCR 12.',
    banks: ['sha256', 'sha384'],
    events: [
      { pcr: 12, measure: 'image', eventType: 'EV_IPL' },
      { pcr: 12, measure: 'header', eventType: 'EV_IPL' },
      { pcr: 12, measure: 'signer', eventType: 'EV_IPL' },
    ],
  },
};

export const DEFAULT_POLICY_NAME = 'sha256-sha384';

const validate = compileSchema<PcrPolicy>('pcr-policy.schema.json');

/** Validates a policy document (schema, then meaning); errors carry the JSON path. */
export function validatePolicy(doc: unknown, source = 'pcr policy'): PcrPolicy {
  const bad = validate(doc);
  if (bad) throw new PolicyError(`${source}: ${bad}`);
  const p = doc as PcrPolicy;
  p.events.forEach((e, i) => {
    if (e.pcr >= 17 && e.pcr <= 22)
      throw new PolicyError(`${source}: /events/${i}/pcr: PCR ${e.pcr} is reserved for the dynamic launch (localities 2-4); the TXT launch measures into it`);
  });
  for (const [i, b] of p.banks.entries()) {
    const alg = hashAlgByName(b)!;
    if (!nodeSupports(alg)) throw new PolicyError(`${source}: /banks/${i}: this Node/OpenSSL build cannot compute ${b}`, EXIT.UNSUPPORTED);
  }
  return p;
}

/** A built-in policy by name, or a policy file by path. */
export function loadPolicy(nameOrPath: string = DEFAULT_POLICY_NAME): PcrPolicy {
  const builtin = BUILTIN_POLICIES[nameOrPath];
  if (builtin) return structuredClone(builtin);
  let text: string;
  try {
    text = readFileBounded(nameOrPath, { what: 'pcr policy', kind: 'document' }).toString('utf8');
  } catch (e) {
    if (e instanceof HyperEnclaveError && e.exitCode !== EXIT.NOT_FOUND) throw e; // a directory, too large, no permission
    throw new PolicyError(`pcr policy ${nameOrPath}: not a built-in policy (${Object.keys(BUILTIN_POLICIES).join(', ')}) and not readable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, EXIT.NOT_FOUND);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new PolicyError(`pcr policy ${nameOrPath}: not JSON (${jsonSyntaxProblem(e, text)})`);
  }
  return validatePolicy(doc, `pcr policy ${nameOrPath}`);
}

/**
 * The banks to extend on a TPM: every active bank we can compute (so no bank is left behind),
 * after checking the policy's banks are all active. `active` as tpm2-tools names them.
 */
export function banksForTpm(policy: PcrPolicy, active: readonly string[]): HashAlgName[] {
  const activeNames = active.map((a) => hashAlgByName(a)?.name ?? a);
  const missing = policy.banks.filter((b) => !activeNames.includes(b));
  if (missing.length > 0)
    throw new PolicyError(
      `pcr policy ${policy.name} needs the ${missing.join(', ')} PCR bank${missing.length > 1 ? 's' : ''}, the TPM's active banks are ${activeNames.join(', ') || '(none)'}` +
        (missing.includes('sm3_256') ? ` (use the ${DEFAULT_POLICY_NAME} policy on a TPM without SM3, e.g. swtpm)` : ''),
      EXIT.UNSUPPORTED,
    );
  const out: HashAlgName[] = [];
  for (const n of activeNames) {
    const alg = hashAlgByName(n);
    if (alg && nodeSupports(alg) && !out.includes(alg.name)) out.push(alg.name);
  }
  return out;
}

/** Canonical bytes of a policy (sorted keys, no spaces): what the DRTM launch measures as the MLE's policy. */
export function canonicalPolicyBytes(p: PcrPolicy): Buffer {
  const canon = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canon);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])]));
    return v;
  };
  return Buffer.from(JSON.stringify(canon(p)), 'utf8');
}
