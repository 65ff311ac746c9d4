import { createHash } from 'node:crypto';
import { type HashAlgName, hashAlgByName } from '../tpm/alg.js';
import type { VerifiedImage } from '../measure/container.js';
import { canonicalPolicyBytes, type PcrPolicy } from '../measure/policy.js';
import { type PcrValues, eventDataFor, predictPcrs } from '../measure/plan.js';
import { writeEventLog } from '../eventlog/write.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { parseLaunchEnvironment } from './launch-env.js';
import { TxtError } from './registers.js';

/** DRTM event types (0x400 + n, Intel TXT MLE Developer's Guide / tboot). */
export const DRTM_EVTYPE = {
  PCR_MAPPING: 0x401,
  HASH_START: 0x402,
  COMBINED_HASH: 0x403,
  MLE_HASH: 0x404,
  LCP_CONTROL_HASH: 0x40c,
  LCP_DETAILS_HASH: 0x412,
  LCP_AUTHORITIES_HASH: 0x413,
  CAP_VALUE: 0x4ff,
} as const;

export const drtmEventName = (t: number): string => Object.entries(DRTM_EVTYPE).find(([, v]) => v === t)?.[0] ?? `0x${t.toString(16)}`;

/** One step of the launch: who extends (locality), where, what. */
export interface DrtmStep {
  locality: 2 | 4;
  pcr: 17 | 18;
  eventType: number;
  digests: Partial<Record<HashAlgName, Buffer>>;
  data: Buffer;
}

function digestsOf(banks: readonly HashAlgName[], bytes: Buffer): Partial<Record<HashAlgName, Buffer>> {
  const out: Partial<Record<HashAlgName, Buffer>> = {};
  for (const b of banks) out[b] = createHash(hashAlgByName(b)!.nodeName).update(bytes).digest();
  return out;
}

/**
 * The emulated launch, "details/authorities" mapping (docs/pcr-policy.md):
 *   locality 4: HASH_START/DATA(launch environment)/END  → PCR17 = H(0ⁿ ‖ H(LE))      [HASH_START]
 *   locality 2: PCR17 ← H(image)                                                  [MLE_HASH]
 *               PCR17 ← H(container header: entry, sizes, features, digests)       [LCP_DETAILS_HASH]
 *               PCR17 ← H(canonical PCR policy JSON)                               [LCP_CONTROL_HASH]
 *               PCR18 ← H(signer SPKI DER, empty when unsigned)                    [LCP_AUTHORITIES_HASH]
 */
export function planDrtmLaunch(launchEnv: Buffer, img: VerifiedImage, policy: PcrPolicy, banks: readonly HashAlgName[]): DrtmStep[] {
  const le = parseLaunchEnvironment(launchEnv, img.header.arch);
  for (const b of banks) if (!img.imageDigests[b]) throw new TxtError(`DRTM: the image was verified without its ${b} digest`);
  const imageDigests: Partial<Record<HashAlgName, Buffer>> = {};
  for (const b of banks) imageDigests[b] = img.imageDigests[b]!;
  const policyBytes = canonicalPolicyBytes(policy);
  return [
    { locality: 4, pcr: 17, eventType: DRTM_EVTYPE.HASH_START, digests: digestsOf(banks, launchEnv), data: Buffer.from(`hyperenclave:launch-environment v=1 name=${le.name} version=${le.version} arch=${le.arch} length=${launchEnv.length}`) },
    { locality: 2, pcr: 17, eventType: DRTM_EVTYPE.MLE_HASH, digests: imageDigests, data: eventDataFor('image', img) },
    { locality: 2, pcr: 17, eventType: DRTM_EVTYPE.LCP_DETAILS_HASH, digests: digestsOf(banks, img.headerBytes), data: eventDataFor('header', img) },
    { locality: 2, pcr: 17, eventType: DRTM_EVTYPE.LCP_CONTROL_HASH, digests: digestsOf(banks, policyBytes), data: Buffer.from(`hyperenclave:policy v=1 name=${policy.name} json=${policyBytes.toString('hex')}`) },
    { locality: 2, pcr: 18, eventType: DRTM_EVTYPE.LCP_AUTHORITIES_HASH, digests: digestsOf(banks, img.signer?.spki ?? Buffer.alloc(0)), data: eventDataFor('signer', img) },
  ];
}

/**
 * PCR17/18 after the launch, from the artifacts alone. HASH_START resets PCRs 17-22 to zero
 * (checked against swtpm), so the first step's digest is extended into zeros.
 */
export function predictDrtmPcrs(steps: readonly DrtmStep[], banks: readonly HashAlgName[]): PcrValues {
  if (steps[0]?.eventType !== DRTM_EVTYPE.HASH_START) throw new TxtError('DRTM: a launch starts with HASH_START');
  const zeros: PcrValues = {};
  for (const b of banks) {
    const n = hashAlgByName(b)!.size;
    zeros[b] = { 17: Buffer.alloc(n), 18: Buffer.alloc(n) };
  }
  const values = predictPcrs(steps, banks, zeros);
  for (const b of banks) values[b]![18] ??= zeros[b]![18]!;
  return values;
}

/** What the emulated chipset and the MLE need from the TPM (src/tpm's swtpm client provides it). */
export interface DrtmTpm {
  /** swtpm control channel SET_LOCALITY. */
  setLocality(locality: number): Promise<void>;
  hashStart(): Promise<void>;
  hashData(data: Buffer): Promise<void>;
  hashEnd(): Promise<void>;
  /** TPM2_PCR_Extend with a digest for every given bank in one command. */
  pcrExtend(pcr: number, digests: { alg: HashAlgName; digest: Buffer }[]): Promise<void>;
}

/** Where each launch event is recorded: DrtmLogRecorder, or src/eventlog's EventLogAppender on a DRTM log file. */
export interface DrtmLogSink {
  append(event: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }): Promise<unknown> | unknown;
}

/** swtpm HASH_DATA carries at most ~4 KiB per command; stay well below. */
const HASH_DATA_CHUNK = 1024;

/**
 * Performs the launch on an emulated TPM as the chipset and MLE would, recording each step.
 * Leaves the TPM at locality 0 afterwards (as the OS runs), even on failure.
 */
export async function emulatedLaunch(tpm: DrtmTpm, launchEnv: Buffer, steps: readonly DrtmStep[], log?: DrtmLogSink): Promise<void> {
  if (steps[0]?.eventType !== DRTM_EVTYPE.HASH_START) throw new TxtError('DRTM: a launch starts with HASH_START');
  try {
    await tpm.setLocality(4);
    await tpm.hashStart();
    for (let o = 0; o < launchEnv.length; o += HASH_DATA_CHUNK) await tpm.hashData(launchEnv.subarray(o, o + HASH_DATA_CHUNK));
    await tpm.hashEnd();
    await log?.append({ pcr: 17, type: steps[0].eventType, digests: steps[0].digests as Record<string, Buffer>, data: steps[0].data });
    await tpm.setLocality(2);
    for (const s of steps.slice(1)) {
      if (s.locality !== 2) throw new TxtError(`DRTM: step ${drtmEventName(s.eventType)} at locality ${s.locality}, only the first step runs at locality 4`);
      await tpm.pcrExtend(s.pcr, Object.entries(s.digests).map(([alg, digest]) => ({ alg: alg as HashAlgName, digest: digest! })));
      await log?.append({ pcr: s.pcr, type: s.eventType, digests: s.digests as Record<string, Buffer>, data: s.data });
    }
  } finally {
    await tpm.setLocality(0);
  }
}

/** DRTM log records kept in memory during a launch; `encode` gives the TCG crypto-agile log (src/eventlog's writer). */
export class DrtmLogRecorder implements DrtmLogSink {
  readonly events: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }[] = [];
  append(event: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }): void {
    this.events.push(event);
  }
  /** The log as a TCG PC Client crypto-agile event log carrying `banks` (every event must have their digests). */
  encode(banks: readonly HashAlgName[]): Buffer {
    return writeEventLog({
      specId: { banks },
      events: this.events.map((e) => ({ pcr: e.pcr, type: e.type, data: e.data, digests: Object.fromEntries(banks.map((b) => [b, e.digests[b]!])) })),
    });
  }
  /** Writes the log file atomically (temp + fsync + rename). */
  writeTo(path: string, banks: readonly HashAlgName[]): void {
    writeFileAtomic(path, this.encode(banks), 0o644);
  }
}
