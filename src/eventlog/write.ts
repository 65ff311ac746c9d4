import { createHash } from 'node:crypto';
import { hashAlgById, hashAlgByName } from '../tpm/alg.js';
import { EventLogError } from './errors.js';
import type { SpecIdAlgorithm, SpecIdEvent } from './parse.js';
import { EVENT_TYPES, eventTypeByName } from './types.js';

export interface EventInput {
  pcr: number;
  /** Event type: a number or a name (EV_IPL, EV_EFI_ACTION, …). */
  type: number | string;
  data: Uint8Array;
  /**
   * Digests: as a list (written in this order) or bank → digest. Banks of the log that are not
   * given are computed as the hash of `data` (what most event types extend).
   */
  digests?: Record<string, Uint8Array> | readonly { bank?: string; algId?: number; digest: Uint8Array }[];
}

/** Spec ID event fields; only `banks` is required (defaults: PC Client, spec 2.0 errata 0, UINT64). */
export interface SpecIdInput {
  banks: readonly string[];
  platformClass?: number;
  specVersionMinor?: number;
  specVersionMajor?: number;
  specErrata?: number;
  uintnSize?: number;
  vendorInfo?: Uint8Array;
}

export type WriteSpec =
  | { format?: 'crypto-agile'; specId: SpecIdInput | SpecIdEvent; events: readonly EventInput[]; startupLocality?: number }
  | { format: 'sha1'; events: readonly EventInput[] };

const SPEC_ID_SIGNATURE = Buffer.from('Spec ID Event03\0', 'latin1');

/** Resolves Spec ID input to algorithm entries (known algorithms only; a parsed SpecIdEvent is taken as is). */
export function specIdAlgorithms(spec: SpecIdInput | SpecIdEvent): SpecIdAlgorithm[] {
  if ('algorithms' in spec) return spec.algorithms;
  if (spec.banks.length === 0) throw new EventLogError('a crypto-agile log needs at least one bank');
  return spec.banks.map((b) => {
    const alg = hashAlgByName(b);
    if (!alg) throw new EventLogError(`unknown bank ${JSON.stringify(b)}`);
    return { algId: alg.id, bank: alg.name, digestSize: alg.size };
  });
}

/** The SHA-1-format header event (TCG_PCClientPCREvent, EV_NO_ACTION) carrying Spec ID Event03. */
export function encodeSpecIdHeader(spec: SpecIdInput | SpecIdEvent): Buffer {
  const algs = specIdAlgorithms(spec);
  const vendor = Buffer.from(spec.vendorInfo ?? Buffer.alloc(0));
  if (vendor.length > 255) throw new EventLogError(`vendorInfo has ${vendor.length} bytes, at most 255 fit`);
  const data = Buffer.alloc(16 + 4 + 4 + 4 + algs.length * 4 + 1 + vendor.length);
  let p = SPEC_ID_SIGNATURE.copy(data, 0);
  p = data.writeUInt32LE(spec.platformClass ?? 0, p);
  p = data.writeUInt8(spec.specVersionMinor ?? 0, p);
  p = data.writeUInt8(spec.specVersionMajor ?? 2, p);
  p = data.writeUInt8(spec.specErrata ?? 0, p);
  p = data.writeUInt8(spec.uintnSize ?? 2, p);
  p = data.writeUInt32LE(algs.length, p);
  for (const a of algs) {
    p = data.writeUInt16LE(a.algId, p);
    p = data.writeUInt16LE(a.digestSize, p);
  }
  p = data.writeUInt8(vendor.length, p);
  vendor.copy(data, p);
  return encodeSha1Event({ pcr: 0, type: EVENT_TYPES.EV_NO_ACTION, data, digests: [{ bank: 'sha1', digest: Buffer.alloc(20) }] });
}

function typeId(t: number | string): number {
  if (typeof t === 'number') {
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new EventLogError(`event type ${t} is not a u32`);
    return t;
  }
  const id = eventTypeByName(t);
  if (id === undefined) throw new EventLogError(`unknown event type ${JSON.stringify(t)}`);
  return id;
}

function checkPcr(pcr: number): void {
  if (!Number.isInteger(pcr) || pcr < 0 || pcr > 0xffffffff) throw new EventLogError(`PCR index ${pcr} is not a u32`);
}

function digestFor(ev: EventInput, a: SpecIdAlgorithm): Buffer {
  let d: Uint8Array | undefined;
  if (Array.isArray(ev.digests)) d = (ev.digests as readonly { bank?: string; algId?: number; digest: Uint8Array }[]).find((x) => x.algId === a.algId || x.bank === a.bank)?.digest;
  else if (ev.digests) d = (ev.digests as Record<string, Uint8Array>)[a.bank];
  if (!d) {
    // EV_NO_ACTION events are not extended: their digests are zero by definition.
    if (typeId(ev.type) === EVENT_TYPES.EV_NO_ACTION) return Buffer.alloc(a.digestSize);
    const alg = hashAlgById(a.algId);
    if (!alg) throw new EventLogError(`no ${a.bank} digest given and the algorithm is unknown`);
    return createHash(alg.nodeName).update(ev.data).digest();
  }
  if (d.length !== a.digestSize) throw new EventLogError(`${a.bank} digest has ${d.length} bytes, expected ${a.digestSize}`);
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

/**
 * Digests a record carries: exactly the caller's list, in its order, when given as a list (so a
 * parsed record is written back as it was); every bank of the log, in Spec ID order, otherwise.
 */
function digestOrder(ev: EventInput, algs: readonly SpecIdAlgorithm[]): SpecIdAlgorithm[] {
  if (!Array.isArray(ev.digests)) return [...algs];
  const list = ev.digests as readonly { bank?: string; algId?: number; digest: Uint8Array }[];
  const ordered: SpecIdAlgorithm[] = [];
  for (const x of list) {
    const a = algs.find((s) => s.algId === x.algId || s.bank === x.bank);
    if (!a) throw new EventLogError(`digest for ${x.bank ?? x.algId} is not a bank of this log`);
    if (ordered.includes(a)) throw new EventLogError(`two digests for ${a.bank}`);
    ordered.push(a);
  }
  return ordered;
}

/** One TCG_PCR_EVENT2 record with a digest for every algorithm of the log. */
export function encodeEvent2(ev: EventInput, algs: readonly SpecIdAlgorithm[]): Buffer {
  checkPcr(ev.pcr);
  const order = digestOrder(ev, algs);
  const digests = order.map((a) => digestFor(ev, a));
  const size = 12 + order.reduce((n, a) => n + 2 + a.digestSize, 0) + 4 + ev.data.length;
  const out = Buffer.alloc(size);
  let p = out.writeUInt32LE(ev.pcr, 0);
  p = out.writeUInt32LE(typeId(ev.type), p);
  p = out.writeUInt32LE(order.length, p);
  order.forEach((a, i) => {
    p = out.writeUInt16LE(a.algId, p);
    p += digests[i]!.copy(out, p);
  });
  p = out.writeUInt32LE(ev.data.length, p);
  out.set(ev.data, p);
  return out;
}

/** One SHA-1-format record (TCG_PCClientPCREvent). */
export function encodeSha1Event(ev: EventInput): Buffer {
  checkPcr(ev.pcr);
  const d = digestFor(ev, { algId: 0x0004, bank: 'sha1', digestSize: 20 });
  const out = Buffer.alloc(32 + ev.data.length);
  out.writeUInt32LE(ev.pcr, 0);
  out.writeUInt32LE(typeId(ev.type), 4);
  d.copy(out, 8);
  out.writeUInt32LE(ev.data.length, 28);
  out.set(ev.data, 32);
  return out;
}

/** The EV_NO_ACTION "StartupLocality" event (PCR0 starts at …0L instead of zero). */
export function startupLocalityEvent(locality: number): EventInput {
  if (!Number.isInteger(locality) || locality < 0 || locality > 4) throw new EventLogError(`StartupLocality ${locality} is not 0-4`);
  return { pcr: 0, type: EVENT_TYPES.EV_NO_ACTION, data: Buffer.concat([Buffer.from('StartupLocality\0', 'latin1'), Buffer.from([locality])]) };
}

/**
 * Writes a whole log: crypto-agile (SHA-1 header with Spec ID Event03, then TCG_PCR_EVENT2
 * records; a StartupLocality event right after the header when asked) or legacy SHA-1.
 * Writing a parsed log's specId and events back gives the same bytes.
 */
export function writeEventLog(spec: WriteSpec): Buffer {
  if (spec.format === 'sha1') return Buffer.concat(spec.events.map(encodeSha1Event));
  const algs = specIdAlgorithms(spec.specId);
  const parts: Buffer[] = [encodeSpecIdHeader(spec.specId)];
  if (spec.startupLocality !== undefined) parts.push(encodeEvent2(startupLocalityEvent(spec.startupLocality), algs));
  for (const ev of spec.events) parts.push(encodeEvent2(ev, algs));
  return Buffer.concat(parts);
}
