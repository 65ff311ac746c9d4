/**
 * The memory-encryption backends, one descriptor each: everything the rest of the code needs to
 * know about a backend kind is reached through BACKENDS[kind] (docs/adding-a-backend.md). The
 * kind names themselves are BACKEND_KINDS (kind.ts, imported by the config without this
 * module); `registry.test.ts` checks that the two agree and that the schemas list the same names.
 */
import { timingSafeEqual } from 'node:crypto';
import { EXIT } from '../../errors.js';
import { EMULATED_MKTME, FirmwareBackend, MktmeBackend, NoneBackend, type FirmwareBackendOptions } from './backends.js';
import { hardwareSupport, type PlatformFacts } from './detect.js';
import { BackendError } from './errors.js';
import type { KeySlotKind } from './keyslots.js';
import { LIMITATIONS } from './limitations.js';
import type { MktmeOptions, MktmePlatform } from './mktme.js';
import { CSV_SUITE, SEV_SUITE, launchMeasurement, type FirmwareSuite } from './sev-firmware.js';
import { BACKEND_KINDS } from './kind.js';
import type { BackendCapabilities, BackendContext, BackendKind, MemoryEncryptionBackend } from './types.js';

export interface CreateBackendOptions {
  firmware?: FirmwareBackendOptions;
  mktme?: MktmeOptions | { platform: MktmePlatform };
}

/** What a guest owner knows to recompute a firmware launch measurement (SEV/CSV LAUNCH_MEASURE). */
export interface LaunchReference {
  tik: Buffer;
  allowedLaunchDigests: string[];
  allowedPolicies?: number[];
}

/** Firmware launch inputs as evidence reports them (apiMajor, apiMinor, build, policy, mnonce hex). */
export type LaunchInputs = Record<string, string | number>;

export interface BackendDescriptor {
  readonly kind: BackendKind;
  /** The key-slot space its guests draw from (ASIDs, KeyIDs); null: no key slot. */
  readonly keySlotKind: KeySlotKind | null;
  /** Whether the hardware is there, naming what was found (real platform). */
  detect(facts: PlatformFacts): { available: boolean; reason: string };
  /** Capabilities without launching anything (`hyperenclave platform`). */
  describe(ctx: BackendContext): BackendCapabilities;
  /** The backend itself; on a real machine, an error saying what is missing. */
  create(ctx: BackendContext, opts?: CreateBackendOptions): MemoryEncryptionBackend;
  /**
   * The verifier's launch check, for backends whose firmware measures the launch: the measurement
   * recomputed from the reference launch digests and the reported inputs. Absent: nothing to recompute.
   */
  verifyLaunch?(measurement: Buffer | undefined, inputs: LaunchInputs, ref: LaunchReference): { ok: boolean; reason: string };
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** On a real machine no backend but `none` can launch yet: say what was found and what is missing. */
function refuseOnHardware(kind: BackendKind, ctx: BackendContext): void {
  if (ctx.facts.platform !== 'linux') return;
  const hw = hardwareSupport(kind, ctx.facts);
  if (!hw.available) throw new BackendError(hw.reason, EXIT.UNSUPPORTED);
  throw new BackendError(`${hw.reason}, but launching real ${kind} guests needs the addon's /dev/sev + KVM_MEMORY_ENCRYPT_OP (or PCONFIG) bridge, not available in this build`, EXIT.UNSUPPORTED);
}

/** SEV/CSV LAUNCH_MEASURE recomputed with the TIK from each reference launch digest. */
function firmwareLaunchCheck(suite: FirmwareSuite): NonNullable<BackendDescriptor['verifyLaunch']> {
  return (measurement, l, ref) => {
    const num = (k: string): number | undefined => (typeof l[k] === 'number' ? (l[k] as number) : undefined);
    const apiMajor = num('apiMajor');
    const apiMinor = num('apiMinor');
    const build = num('build');
    const pol = num('policy');
    const mnonce = typeof l.mnonce === 'string' && /^[0-9a-f]{32}$/.test(l.mnonce) ? Buffer.from(l.mnonce, 'hex') : undefined;
    if (apiMajor === undefined || apiMinor === undefined || build === undefined || pol === undefined || !mnonce) return { ok: false, reason: 'launch inputs (apiMajor, apiMinor, build, policy, mnonce) missing' };
    if (ref.allowedPolicies && !ref.allowedPolicies.includes(pol)) return { ok: false, reason: `guest policy 0x${pol.toString(16)} not allowed` };
    for (const ld of ref.allowedLaunchDigests) {
      const m = launchMeasurement(suite, { apiMajor, apiMinor, build, policy: pol, launchDigest: Buffer.from(ld, 'hex'), mnonce, tik: ref.tik });
      if (measurement && m.length === measurement.length && timingSafeEqual(m, measurement)) return { ok: true, reason: `matches reference launch digest ${ld.slice(0, 16)}…` };
    }
    return { ok: false, reason: `launch measurement ${hex(measurement ?? Buffer.alloc(0)).slice(0, 16)}… matches none of ${ref.allowedLaunchDigests.length} reference launch digest(s)` };
  };
}

/** Capabilities of real hardware from the platform facts (CPUID, MSRs, firmware), for the kinds that are not `none`. */
function hardwareCapabilities(kind: Exclude<BackendKind, 'none'>, facts: PlatformFacts, slots: BackendCapabilities['slots'], cipher: BackendCapabilities['memoryCipher'], measurement: BackendCapabilities['measurement'], secretInjection: boolean): BackendCapabilities {
  const hw = hardwareSupport(kind, facts);
  return { kind, available: hw.available, emulated: false, reason: hw.reason, slots, memoryCipher: cipher, measurement, secretInjection, integrity: false, limitations: LIMITATIONS[kind] };
}

/** An AMD-style firmware backend (SEV, SEV-ES, CSV): ASIDs, firmware launch measurement. */
function firmwareBackend(kind: 'sev' | 'sev-es' | 'csv', suite: FirmwareSuite): BackendDescriptor {
  const cipher = kind === 'csv' ? 'sm4-xts' : 'aes-128-xts';
  const measurement = kind === 'csv' ? 'hmac-sm3' : 'hmac-sha256';
  return {
    kind,
    keySlotKind: kind,
    detect: (facts) => hardwareSupport(kind, facts),
    describe(ctx) {
      if (ctx.facts.platform !== 'linux') return this.create(ctx).capabilities();
      const leaf = ctx.facts.amdLeaf;
      const slots = leaf ? (kind === 'sev-es' ? { label: 'ASID' as const, first: 1, last: leaf.minSevAsid - 1 } : { label: 'ASID' as const, first: leaf.minSevAsid, last: leaf.maxEncryptedGuests }) : null;
      return hardwareCapabilities(kind, ctx.facts, slots, cipher, measurement, true);
    },
    create(ctx, opts = {}) {
      refuseOnHardware(kind, ctx);
      return new FirmwareBackend(kind, ctx, opts.firmware);
    },
    verifyLaunch: firmwareLaunchCheck(suite),
  };
}

/** Every backend, by kind: the one place a new backend is added (docs/adding-a-backend.md). */
export const BACKENDS: Readonly<Record<BackendKind, BackendDescriptor>> = {
  none: {
    kind: 'none',
    keySlotKind: null,
    detect: () => ({ available: true, reason: 'no memory encryption' }),
    describe: (ctx) => new NoneBackend(ctx).capabilities(),
    create: (ctx) => new NoneBackend(ctx),
  },
  sev: firmwareBackend('sev', SEV_SUITE),
  'sev-es': firmwareBackend('sev-es', SEV_SUITE),
  csv: firmwareBackend('csv', CSV_SUITE),
  mktme: {
    kind: 'mktme',
    keySlotKind: 'mktme',
    detect: (facts) => hardwareSupport('mktme', facts),
    describe(ctx) {
      if (ctx.facts.platform !== 'linux') return this.create(ctx).capabilities();
      const { activate, capability } = ctx.facts.intel;
      const slots = activate && capability ? { label: 'KeyID' as const, first: 1, last: Math.min((1 << activate.keyIdBits) - 1, capability.maxKeys) } : null;
      return hardwareCapabilities('mktme', ctx.facts, slots, 'aes-128-xts', 'sha256-hypervisor', false);
    },
    create(ctx, opts = {}) {
      refuseOnHardware('mktme', ctx);
      return new MktmeBackend(ctx, opts.mktme ?? EMULATED_MKTME);
    },
  },
};

/** The descriptor of a kind named in a document; undefined for a name no backend has (e.g. foreign evidence). */
export function backendDescriptor(kind: string): BackendDescriptor | undefined {
  return Object.prototype.hasOwnProperty.call(BACKENDS, kind) ? BACKENDS[kind as BackendKind] : undefined;
}

/** The backend for `kind`; on a real machine, a clear error saying what was found when the hardware is absent. */
export function createBackend(kind: BackendKind, ctx: BackendContext, opts: CreateBackendOptions = {}): MemoryEncryptionBackend {
  return BACKENDS[kind].create(ctx, opts);
}

/** Capabilities without constructing a backend (for `hyperenclave platform`). */
export function describeBackend(kind: BackendKind, ctx: BackendContext): BackendCapabilities {
  return BACKENDS[kind].describe(ctx);
}

/**
 * Backend names a verifier may meet in evidence from other producers: no backend of ours, but the
 * verifier still knows how their launch is checked (an SEV-SNP launch as SEV's, for now).
 */
export const FOREIGN_EVIDENCE_BACKENDS: Readonly<Record<'sgx-like' | 'sev-snp', Pick<BackendDescriptor, 'verifyLaunch'>>> = {
  'sgx-like': {},
  'sev-snp': { verifyLaunch: firmwareLaunchCheck(SEV_SUITE) },
};

/** Every backend name evidence may carry (schemas/evidence.schema.json lists exactly these). */
export type EvidenceBackendKind = BackendKind | keyof typeof FOREIGN_EVIDENCE_BACKENDS;
export const EVIDENCE_BACKEND_KINDS: readonly EvidenceBackendKind[] = [...BACKEND_KINDS, ...(Object.keys(FOREIGN_EVIDENCE_BACKENDS) as (keyof typeof FOREIGN_EVIDENCE_BACKENDS)[])];

/** The verifier's launch check for a backend named in evidence; undefined when its launch is not measured by firmware. */
export function launchCheckFor(kind: string): BackendDescriptor['verifyLaunch'] | undefined {
  const own = backendDescriptor(kind);
  if (own) return own.verifyLaunch?.bind(own);
  return Object.prototype.hasOwnProperty.call(FOREIGN_EVIDENCE_BACKENDS, kind) ? FOREIGN_EVIDENCE_BACKENDS[kind as keyof typeof FOREIGN_EVIDENCE_BACKENDS].verifyLaunch : undefined;
}
