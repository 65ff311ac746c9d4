import { createHash } from 'node:crypto';
import { type HashAlgName, hashAlgByName } from '../tpm/alg.js';
import type { VerifiedImage } from './container.js';
import { ImageError } from './errors.js';
import { type MeasureKind, type PcrPolicy, EVENT_TYPE_CODES, eventTypeCode } from './policy.js';

/** One PCR extension the policy asks for: the digest per bank and the event record for the log. */
export interface PlannedEvent {
  pcr: number;
  eventType: number;
  measure: MeasureKind;
  digests: Partial<Record<HashAlgName, Buffer>>;
  /** Self-describing event data (UTF-8 text, docs/pcr-policy.md). */
  data: Buffer;
}

export const eventTypeName = (code: number): string => Object.entries(EVENT_TYPE_CODES).find(([, v]) => v === code)?.[0] ?? `0x${code.toString(16)}`;

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function hashOf(bank: HashAlgName, ...parts: Uint8Array[]): Buffer {
  const alg = hashAlgByName(bank);
  if (!alg) throw new ImageError(`measure: unknown bank ${bank}`);
  const h = createHash(alg.nodeName);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** The event data for one kind of measurement: `hyperenclave:<kind> v=1 key=value …`. */
export function eventDataFor(kind: MeasureKind, img: VerifiedImage): Buffer {
  const h = img.header;
  switch (kind) {
    case 'image':
      return Buffer.from(
        `hyperenclave:image v=1 arch=${h.arch} kind=${h.kind} build-id=${hex(h.buildId) || '-'} length=${h.imageLength} header-sha256=${createHash('sha256').update(img.headerBytes).digest('hex')}`,
      );
    case 'header':
      return Buffer.from(`hyperenclave:config v=1 header=${hex(img.headerBytes)}`);
    case 'signer':
      return img.signer
        ? Buffer.from(`hyperenclave:signer v=1 alg=${img.signer.alg} key-id=${hex(img.signer.keyId)} spki=${hex(img.signer.spki)}`)
        : Buffer.from('hyperenclave:signer v=1 alg=none');
  }
}

/** The bytes whose digest is extended for a kind (the image's digests come from the streaming pass). */
function digestFor(kind: MeasureKind, img: VerifiedImage, bank: HashAlgName): Buffer {
  switch (kind) {
    case 'image': {
      const d = img.imageDigests[bank];
      if (!d) throw new ImageError(`measure: the image was verified without its ${bank} digest (pass banks: [..., '${bank}'])`);
      return d;
    }
    case 'header':
      return hashOf(bank, img.headerBytes);
    case 'signer':
      return hashOf(bank, img.signer?.spki ?? Buffer.alloc(0));
  }
}

/** The events the policy produces for this image, in order, with a digest for every bank given. */
export function planMeasurement(img: VerifiedImage, policy: PcrPolicy, banks: readonly HashAlgName[]): PlannedEvent[] {
  return policy.events.map((e) => {
    const digests: Partial<Record<HashAlgName, Buffer>> = {};
    for (const b of banks) digests[b] = digestFor(e.measure, img, b);
    return { pcr: e.pcr, eventType: eventTypeCode(e.eventType), measure: e.measure, digests, data: eventDataFor(e.measure, img) };
  });
}

/** PCR_Extend's arithmetic: new = H(old ‖ digest). */
export function extendPcr(bank: HashAlgName, old: Buffer, digest: Buffer): Buffer {
  return hashOf(bank, old, digest);
}

export type PcrValues = Partial<Record<HashAlgName, Record<number, Buffer>>>;

export function pcrSize(bank: HashAlgName): number {
  return hashAlgByName(bank)!.size;
}

/**
 * Final PCR values after `events`, starting from `initial` (bank → PCR → value) or zeros
 * (PCRs 17-22 start at all 0xFF, as before any dynamic launch).
 */
export function predictPcrs(events: readonly { pcr: number; digests: Partial<Record<HashAlgName, Buffer>> }[], banks: readonly HashAlgName[], initial: PcrValues = {}): PcrValues {
  const out: PcrValues = {};
  for (const bank of banks) {
    const values: Record<number, Buffer> = {};
    for (const e of events) {
      const d = e.digests[bank];
      if (!d) throw new ImageError(`predict: an event for PCR ${e.pcr} has no ${bank} digest`);
      const start = values[e.pcr] ?? initial[bank]?.[e.pcr] ?? Buffer.alloc(pcrSize(bank), e.pcr >= 17 && e.pcr <= 22 ? 0xff : 0);
      values[e.pcr] = extendPcr(bank, start, d);
    }
    out[bank] = values;
  }
  return out;
}

export function pcrValuesToJson(v: PcrValues): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const [bank, m] of Object.entries(v)) {
    out[bank] = {};
    for (const [i, d] of Object.entries(m ?? {})) out[bank]![i] = hex(d);
  }
  return out;
}
