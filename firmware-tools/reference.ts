import { createHash } from 'node:crypto';
import { type VerifiedImage, type VerifyOptions, headerToJson, verifyContainerFile } from '../src/measure/container.js';
import { ImageError } from '../src/measure/errors.js';
import { type PcrPolicy, canonicalPolicyBytes } from '../src/measure/policy.js';
import { type PcrValues, eventTypeName, pcrValuesToJson, planMeasurement, predictPcrs } from '../src/measure/plan.js';
import { writeFileAtomic } from '../src/fs/atomic.js';
import { compileSchema } from '../src/schemas.js';
import { type HashAlgName, hashAlgByName } from '../src/tpm/alg.js';
import { drtmEventName, planDrtmLaunch, predictDrtmPcrs } from '../src/txt/drtm.js';
import { parseLaunchEnvironment, readLaunchEnvironmentFile } from '../src/txt/launch-env.js';

export interface ReferenceOptions {
  policy: PcrPolicy;
  /** Banks to compute (default: the policy's banks). */
  banks?: HashAlgName[];
  /** Starting PCR values (bank → PCR → value); zeros otherwise. */
  initial?: PcrValues;
  /** The launch environment blob: adds the DRTM PCR17/18 predictions. */
  launchEnvironment?: Buffer;
  verify?: Omit<VerifyOptions, 'banks'>;
}

export interface ReferenceValuesDoc {
  schema: 'hyperenclave/reference-values';
  version: 1;
  generator: string;
  image: Record<string, unknown>;
  policy: { name: string; sha256: string };
  banks: HashAlgName[];
  pcrs: Record<string, Record<string, string>>;
  hypervisor?: { pcr: number; digests: Record<string, string[]> };
  events: { pcr: number; type: string; eventType: number; measure: string; digests: Record<string, string>; data: string }[];
  drtm?: {
    launchEnvironment: { name: string; version: number; digests: Record<string, string> };
    pcrs: Record<string, Record<string, string>>;
    events: { pcr: number; type: string; eventType: number; locality: number; digests: Record<string, string>; data: string }[];
  };
}

const hexDigests = (d: Partial<Record<string, Buffer>>): Record<string, string> => Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v!.toString('hex')]));

/** Reference values from a verified image (no TPM involved). */
export function referenceValuesFor(img: VerifiedImage, opts: ReferenceOptions): ReferenceValuesDoc {
  const banks = opts.banks ?? opts.policy.banks;
  const events = planMeasurement(img, opts.policy, banks);
  const pcrs = pcrValuesToJson(predictPcrs(events, banks, opts.initial));
  const imageEvent = events.find((e) => e.measure === 'image');
  const doc: ReferenceValuesDoc = {
    schema: 'hyperenclave/reference-values',
    version: 1,
    generator: 'hyperenclave firmware reference',
    image: {
      id: img.id,
      ...headerToJson(img.header),
      signer: img.signer ? { alg: img.signer.alg, keyId: img.signer.keyId.toString('hex'), spki: img.signer.spki.toString('hex') } : null,
    },
    policy: { name: opts.policy.name, sha256: createHash('sha256').update(canonicalPolicyBytes(opts.policy)).digest('hex') },
    banks,
    pcrs,
    ...(imageEvent ? { hypervisor: { pcr: imageEvent.pcr, digests: Object.fromEntries(Object.entries(imageEvent.digests).map(([k, v]) => [k, [v!.toString('hex')]])) } } : {}),
    events: events.map((e) => ({ pcr: e.pcr, type: eventTypeName(e.eventType), eventType: e.eventType, measure: e.measure, digests: hexDigests(e.digests), data: e.data.toString('utf8') })),
  };
  if (opts.launchEnvironment) {
    const le = parseLaunchEnvironment(opts.launchEnvironment, img.header.arch);
    const steps = planDrtmLaunch(opts.launchEnvironment, img, opts.policy, banks);
    const drtmPcrs = pcrValuesToJson(predictDrtmPcrs(steps, banks));
    doc.drtm = {
      launchEnvironment: { name: le.name, version: le.version, digests: hexDigests(steps[0]!.digests) },
      pcrs: drtmPcrs,
      events: steps.map((s) => ({ pcr: s.pcr, type: drtmEventName(s.eventType), eventType: s.eventType, locality: s.locality, digests: hexDigests(s.digests), data: s.data.toString('utf8') })),
    };
    for (const [bank, m] of Object.entries(drtmPcrs)) doc.pcrs[bank] = { ...doc.pcrs[bank], ...m };
  }
  // Not validated here (compiling the schema costs more than hashing a small image): the tests
  // validate what this writes (firmware-tools/image.test.ts), and every reader validates what it reads.
  return doc;
}

const validateReference = compileSchema<ReferenceValuesDoc>('reference-values.schema.json');

/** Validates a reference-values document (e.g. one read back from disk); undefined when valid. */
export function checkReferenceValues(doc: unknown): string | undefined {
  return validateReference(doc);
}

/** `firmware reference`: container (+ launch environment) → reference-values JSON, written atomically. */
export async function referenceValuesFile(containerPath: string, opts: ReferenceOptions & { launchEnvironmentPath?: string; out?: string }): Promise<ReferenceValuesDoc> {
  const banks = opts.banks ?? opts.policy.banks;
  for (const b of banks) if (!hashAlgByName(b)) throw new ImageError(`reference values: unknown bank "${b}"`);
  const img = await verifyContainerFile(containerPath, { ...opts.verify, banks });
  const le = opts.launchEnvironment ?? (opts.launchEnvironmentPath ? readLaunchEnvironmentFile(opts.launchEnvironmentPath) : undefined);
  const doc = referenceValuesFor(img, { ...opts, banks, ...(le ? { launchEnvironment: le } : {}) });
  if (opts.out) writeFileAtomic(opts.out, JSON.stringify(doc, null, 2) + '\n');
  return doc;
}

/** Parses "--initial sha256:12=ab..,sha384:12=cd.." style starting values. */
export function parseInitialValues(spec: string): PcrValues {
  const out: PcrValues = {};
  for (const part of spec.split(',').filter(Boolean)) {
    const m = /^([a-z0-9_]+):(\d+)=(?:0x)?([0-9a-fA-F]+)$/.exec(part.trim());
    if (!m) throw new ImageError(`initial PCR value "${part}": expected BANK:PCR=HEX`);
    const alg = hashAlgByName(m[1]!);
    if (!alg) throw new ImageError(`initial PCR value "${part}": unknown bank ${m[1]}`);
    const pcr = Number(m[2]);
    if (pcr > 23) throw new ImageError(`initial PCR value "${part}": PCR ${pcr} out of range 0-23`);
    const v = Buffer.from(m[3]!, 'hex');
    if (v.length !== alg.size) throw new ImageError(`initial PCR value "${part}": ${alg.name} values are ${alg.size} bytes, got ${v.length}`);
    (out[alg.name] ??= {})[pcr] = v;
  }
  return out;
}
