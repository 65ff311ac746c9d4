import type { HashAlgName } from '../tpm/alg.js';
import { type VerifiedImage, type VerifyOptions, verifyContainerFile } from './container.js';
import { type PcrPolicy, banksForTpm } from './policy.js';
import { type PlannedEvent, type PcrValues, eventTypeName, planMeasurement } from './plan.js';
import { ImageError } from './errors.js';

/** What measuring needs from the TPM client (src/tpm). */
export interface MeasureTpm {
  /** Active PCR banks (tpm2-tools names: sha1, sha256, sha384, sha512, sm3_256). */
  activeBanks(): Promise<string[]>;
  /** TPM2_PCR_Extend with a digest for every given bank in one command. */
  pcrExtend(pcr: number, digests: { alg: HashAlgName; digest: Buffer }[]): Promise<void>;
  /** Optional: current PCR values, to report what the TPM holds after measuring. */
  pcrRead?(pcrs: number[], banks: HashAlgName[]): Promise<PcrValues>;
  /** Optional: the TPM boot identity (resetCount/restartCount from TPM2_ReadClock), for the write-ahead journal. */
  epoch?(): Promise<string>;
}

/** The write-ahead journal (journal.ts): what measureImage records before and after each extension. */
export interface MeasureJournal {
  doneFor(imageId: string, policy: string, banks: readonly string[], total: number): number;
  begin(imageId: string, policy: string, banks: readonly string[], total: number, done: number): void;
  intend(e: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }, logEvents: number): void;
  confirm(): void;
}

/**
 * The runtime measurement log: src/eventlog's EventLogAppender (one TCG_PCR_EVENT2 per
 * extension, durable when append resolves) fits as is; it must carry the banks measured.
 */
export interface RuntimeLogAppender {
  append(event: { pcr: number; type: number; digests: Record<string, Buffer>; data: Buffer }): Promise<unknown> | unknown;
  /** Events in the log counting the header (needed with a journal). */
  readonly eventCount?: number;
}

export interface MeasureResult {
  schema: 'hyperenclave/measurement';
  version: 1;
  image: { id: string; arch: string; buildId: string; imageLength: number; signer: string | null };
  policy: string;
  banks: HashAlgName[];
  events: { pcr: number; type: string; measure: string; digests: Record<string, string>; data: string }[];
  /** PCR values after measuring, when the TPM client can read them. */
  pcrs?: Record<string, Record<string, string>>;
  /** With a journal: events of this image already measured earlier in this TPM boot (not extended again). */
  alreadyMeasured?: number;
}

/**
 * Verifies the container (one streaming pass computing every bank the TPM has active), then for
 * each policy event extends the PCR in all banks with one PCR_Extend and appends the matching
 * event to the runtime log. Nothing is extended when verification fails.
 */
export async function measureImage(args: {
  tpm: MeasureTpm;
  log: RuntimeLogAppender;
  policy: PcrPolicy;
  /** A container path (verified here) or an already verified image with digests for the TPM's banks. */
  image: string | VerifiedImage;
  verify?: Omit<VerifyOptions, 'banks'>;
  /**
   * Who extends the image event. Default: the TPM, here. On the linux platform the kernel driver
   * measures the image itself while loading it (HE_IOC_LOAD), so the caller passes that load; the
   * event is logged here as for any other extension.
   */
  extendImage?: (event: PlannedEvent) => Promise<void>;
  /**
   * Write-ahead journal: each event is recorded as intended before its extension and confirmed
   * after its log entry, and events already measured for this image in this TPM boot are skipped.
   */
  journal?: MeasureJournal;
  /** With a journal: skip events of this image already measured in this TPM boot (default true). */
  resume?: boolean;
}): Promise<MeasureResult> {
  const banks = banksForTpm(args.policy, await args.tpm.activeBanks());
  const img = typeof args.image === 'string' ? await verifyContainerFile(args.image, { ...args.verify, banks }) : args.image;
  const events: PlannedEvent[] = planMeasurement(img, args.policy, banks);
  const j = args.journal;
  const start = j && args.resume !== false ? j.doneFor(img.id, args.policy.name, banks, events.length) : 0;
  j?.begin(img.id, args.policy.name, banks, events.length, start);
  for (const e of events.slice(start)) {
    const record = { pcr: e.pcr, type: e.eventType, digests: e.digests as Record<string, Buffer>, data: e.data };
    // Without a journal: log after the extend, so a crash in between leaves the TPM ahead of the
    // log (a replay reports it at this event) rather than a log claiming an extension that never
    // happened. With one, the journal's pending record lets the next run settle exactly which.
    if (j) {
      if (args.log.eventCount === undefined) throw new ImageError('measure: a journaled measurement needs the log\'s event count');
      j.intend(record, args.log.eventCount);
    }
    if (e.measure === 'image' && args.extendImage) await args.extendImage(e);
    else await args.tpm.pcrExtend(e.pcr, banks.map((alg) => ({ alg, digest: e.digests[alg]! })));
    await args.log.append(record);
    j?.confirm();
  }
  const result: MeasureResult = {
    schema: 'hyperenclave/measurement',
    version: 1,
    image: {
      id: img.id,
      arch: img.header.arch,
      buildId: img.header.buildId.toString('hex'),
      imageLength: img.header.imageLength,
      signer: img.signer ? img.signer.keyId.toString('hex') : null,
    },
    policy: args.policy.name,
    banks,
    events: events.map((e) => ({
      pcr: e.pcr,
      type: eventTypeName(e.eventType),
      measure: e.measure,
      digests: Object.fromEntries(Object.entries(e.digests).map(([k, v]) => [k, v!.toString('hex')])),
      data: e.data.toString('utf8'),
    })),
    ...(j ? { alreadyMeasured: start } : {}),
  };
  if (args.tpm.pcrRead) {
    const pcrs = [...new Set(events.map((e) => e.pcr))];
    const v = await args.tpm.pcrRead(pcrs, banks);
    result.pcrs = Object.fromEntries(Object.entries(v).map(([b, m]) => [b, Object.fromEntries(Object.entries(m ?? {}).map(([i, d]) => [i, d.toString('hex')]))]));
  }
  return result;
}
