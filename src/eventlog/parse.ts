import { hashAlgById } from '../tpm/alg.js';
import { EventLogError } from './errors.js';
import { EVENT_TYPES, eventTypeName } from './types.js';

export interface EventDigest {
  algId: number;
  /** tpm2-tools bank name (sha1, sha256, …); alg_0x.... for an algorithm we do not know. */
  bank: string;
  digest: Buffer;
}

export interface LogEvent {
  /** Position in the log, 0-based, counting the header event (tpm2_eventlog's EventNum). */
  index: number;
  /** Byte offset of the record in the log and its total length. */
  offset: number;
  length: number;
  pcr: number;
  type: number;
  typeName: string;
  /** One digest per bank, in the order the record carries them. */
  digests: EventDigest[];
  /** Event data (a view into the parsed buffer, not a copy). */
  data: Buffer;
  /** sha1: TCG_PCClientPCREvent (header event and legacy logs); crypto-agile: TCG_PCR_EVENT2. */
  recordFormat: 'sha1' | 'crypto-agile';
}

export interface SpecIdAlgorithm {
  algId: number;
  bank: string;
  digestSize: number;
}

/** TCG_EfiSpecIDEventStruct from the header event ("Spec ID Event03"). */
export interface SpecIdEvent {
  signature: string;
  platformClass: number;
  specVersionMinor: number;
  specVersionMajor: number;
  specErrata: number;
  uintnSize: number;
  algorithms: SpecIdAlgorithm[];
  vendorInfo: Buffer;
}

export interface EventLog {
  /** crypto-agile: SHA-1 header + Spec ID Event03 + TCG_PCR_EVENT2 records; sha1: legacy SHA-1-only log. */
  format: 'crypto-agile' | 'sha1';
  specId?: SpecIdEvent;
  /** Banks the log carries, in Spec ID order (['sha1'] for legacy logs). */
  banks: string[];
  events: LogEvent[];
  /** Bytes taken by records (the log size without padding or torn tail). */
  byteLength: number;
  /** Trailing 0x00/0xFF fill (logs copied out of fixed-size firmware buffers), ignored. */
  padding?: { offset: number; length: number };
  /** Only with allowTornTail: an incomplete last record (e.g. a crash mid-append), ignored. */
  tornTail?: { offset: number; length: number; reason: string };
}

export interface ParseOptions {
  /** Report an incomplete last record in `tornTail` instead of failing (runtime logs being appended to). */
  allowTornTail?: boolean;
  /** Accept Spec ID algorithms we do not know (their digests are carried, not replayed). Default: refuse. */
  allowUnknownAlgorithms?: boolean;
  /** Refuse records that carry fewer digests than the Spec ID event lists algorithms. Default: tolerate. */
  strictDigestCount?: boolean;
}

const SPEC_ID_03 = 'Spec ID Event03';
const SHA1_SIZE = 20;
/** Smallest TCG_PCR_EVENT2: pcr, type, count, eventSize. */
const EVENT2_MIN = 16;

/** Bounds-checked little-endian reads that fail with the field name and offset. */
class Cursor {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}
  need(n: number, field: string): void {
    if (n > this.end - this.pos) {
      throw new EventLogError(`truncated: ${field} needs ${n} bytes, ${Math.max(0, this.end - this.pos)} left`, { offset: this.pos, field, truncated: true });
    }
  }
  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

function bankName(algId: number): string {
  return hashAlgById(algId)?.name ?? `alg_0x${algId.toString(16).padStart(4, '0')}`;
}

/** Reads a TCG_PCClientPCREvent (SHA-1 record). */
function readSha1Record(c: Cursor, index: number): LogEvent {
  const offset = c.pos;
  const pcr = c.u32('pcrIndex');
  const type = c.u32('eventType');
  const digest = c.bytes(SHA1_SIZE, 'digest');
  const size = c.u32('eventDataSize');
  if (size > c.end - c.pos) {
    throw new EventLogError(`truncated: event data size ${size} exceeds the ${c.end - c.pos} bytes left`, { offset: c.pos - 4, field: 'eventDataSize', truncated: true });
  }
  const data = c.bytes(size, 'event');
  return { index, offset, length: c.pos - offset, pcr, type, typeName: eventTypeName(type), digests: [{ algId: 0x0004, bank: 'sha1', digest }], data, recordFormat: 'sha1' };
}

/**
 * Parses TCG_EfiSpecIDEventStruct (Spec ID Event03) from the header event's data.
 * `baseOffset` is where `data` starts in the log, so errors carry log offsets.
 */
export function parseSpecIdEvent(data: Buffer, baseOffset = 0, opts: ParseOptions = {}): SpecIdEvent {
  const c = new Cursor(data, 0, data.length);
  const where = (at: number, field: string, truncated = false) => ({ offset: baseOffset + at, field: `SpecIdEvent.${field}`, truncated });
  try {
    const sig = c.bytes(16, 'signature');
    const signature = sig.toString('latin1').replace(/\0+$/, '');
    const platformClass = c.u32('platformClass');
    const specVersionMinor = c.u8('specVersionMinor');
    const specVersionMajor = c.u8('specVersionMajor');
    const specErrata = c.u8('specErrata');
    const uintnSize = c.u8('uintnSize');
    const countAt = c.pos;
    const n = c.u32('numberOfAlgorithms');
    if (n === 0) throw new EventLogError('Spec ID event lists no digest algorithms', where(countAt, 'numberOfAlgorithms'));
    // Each entry is 4 bytes: refuse a count the data cannot hold before building anything.
    if (n > (c.end - c.pos) / 4) {
      throw new EventLogError(`numberOfAlgorithms ${n} does not fit in the ${c.end - c.pos} bytes left`, where(countAt, 'numberOfAlgorithms', true));
    }
    const algorithms: SpecIdAlgorithm[] = [];
    for (let i = 0; i < n; i++) {
      const entryAt = c.pos;
      const algId = c.u16(`digestSizes[${i}].algorithmId`);
      const digestSize = c.u16(`digestSizes[${i}].digestSize`);
      const known = hashAlgById(algId);
      if (known && known.size !== digestSize) {
        throw new EventLogError(`Spec ID event gives ${known.name} a digest size of ${digestSize}, it is ${known.size}`, where(entryAt + 2, `digestSizes[${i}].digestSize`));
      }
      if (!known && !opts.allowUnknownAlgorithms) {
        throw new EventLogError(`unknown digest algorithm 0x${algId.toString(16).padStart(4, '0')} in Spec ID event`, where(entryAt, `digestSizes[${i}].algorithmId`));
      }
      if (digestSize === 0) throw new EventLogError('digest size 0 in Spec ID event', where(entryAt + 2, `digestSizes[${i}].digestSize`));
      if (algorithms.some((a) => a.algId === algId)) {
        throw new EventLogError(`algorithm ${bankName(algId)} listed twice in Spec ID event`, where(entryAt, `digestSizes[${i}].algorithmId`));
      }
      algorithms.push({ algId, bank: bankName(algId), digestSize });
    }
    const vendorInfoSize = c.u8('vendorInfoSize');
    const vendorInfo = c.bytes(vendorInfoSize, 'vendorInfo');
    return { signature, platformClass, specVersionMinor, specVersionMajor, specErrata, uintnSize, algorithms, vendorInfo };
  } catch (e) {
    // Cursor errors carry offsets relative to `data`: rebase them onto the log.
    if (e instanceof EventLogError && !e.field?.startsWith('SpecIdEvent.')) {
      throw new EventLogError(e.message.replace(/^event log: /, '').replace(/ \[[^\]]*\]$/, ''), where(e.offset ?? 0, e.field ?? '?', e.truncated));
    }
    throw e;
  }
}

/** Reads one TCG_PCR_EVENT2 record; digest sizes come from the Spec ID event. */
function readEvent2(c: Cursor, index: number, algs: Map<number, SpecIdAlgorithm>, strict: boolean): LogEvent {
  const offset = c.pos;
  const pcr = c.u32('pcrIndex');
  const type = c.u32('eventType');
  const countAt = c.pos;
  const count = c.u32('digests.count');
  // Fewer digests than Spec ID algorithms is tolerated (tpm2_eventlog reads such logs; replay marks
  // the bank incomplete) unless strict; more, or none, cannot be right.
  if (count === 0 || count > algs.size || (strict && count !== algs.size)) {
    throw new EventLogError(`digest count mismatch: record has ${count} digests, Spec ID event lists ${algs.size} algorithms`, { offset: countAt, field: 'digests.count' });
  }
  const digests: EventDigest[] = [];
  for (let i = 0; i < count; i++) {
    const algAt = c.pos;
    const algId = c.u16(`digests[${i}].hashAlg`);
    const alg = algs.get(algId);
    if (!alg) throw new EventLogError(`digest algorithm 0x${algId.toString(16).padStart(4, '0')} is not in the Spec ID event`, { offset: algAt, field: `digests[${i}].hashAlg` });
    for (const d of digests) {
      if (d.algId === algId) throw new EventLogError(`two ${alg.bank} digests in one record`, { offset: algAt, field: `digests[${i}].hashAlg` });
    }
    digests.push({ algId, bank: alg.bank, digest: c.bytes(alg.digestSize, `digests[${i}].digest`) });
  }
  const sizeAt = c.pos;
  const size = c.u32('eventSize');
  if (size > c.end - c.pos) {
    throw new EventLogError(`truncated: event size ${size} exceeds the ${c.end - c.pos} bytes left`, { offset: sizeAt, field: 'eventSize', truncated: true });
  }
  const data = c.bytes(size, 'event');
  return { index, offset, length: c.pos - offset, pcr, type, typeName: eventTypeName(type), digests, data, recordFormat: 'crypto-agile' };
}

/** Whether buf[from..] is all 0x00 or all 0xFF (fill after the last record). */
function isFill(buf: Buffer, from: number): boolean {
  if (from >= buf.length) return false;
  const b = buf[from]!;
  if (b !== 0 && b !== 0xff) return false;
  for (let i = from + 1; i < buf.length; i++) if (buf[i] !== b) return false;
  return true;
}

/**
 * Parses a TCG PC Client event log: crypto-agile (SHA-1 header event carrying Spec ID Event03,
 * then TCG_PCR_EVENT2 records) or the legacy SHA-1-only format. Bad input fails with an
 * EventLogError naming the byte offset and field; nothing is allocated beyond views into `input`
 * and one small object per record.
 */
export function parseEventLog(input: Uint8Array, opts: ParseOptions = {}): EventLog {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.length === 0) throw new EventLogError('empty input', { offset: 0 });
  const c = new Cursor(buf, 0, buf.length);
  const events: LogEvent[] = [];
  const log: EventLog = { format: 'sha1', banks: ['sha1'], events, byteLength: 0 };

  const stopAtFillOrTorn = (e: unknown, at: number): boolean => {
    if (!(e instanceof EventLogError)) throw e;
    if (events.length > 0 && isFill(buf, at)) {
      log.padding = { offset: at, length: buf.length - at };
      return true;
    }
    if (opts.allowTornTail && e.truncated && events.length > 0) {
      log.tornTail = { offset: at, length: buf.length - at, reason: e.message };
      return true;
    }
    throw e;
  };

  // The first record is always SHA-1 format; it tells which format follows.
  const header = readSha1Record(c, 0);
  events.push(header);
  const isSpecId03 =
    header.type === EVENT_TYPES.EV_NO_ACTION && header.pcr === 0 && header.data.length >= 16 && header.data.subarray(0, 16).toString('latin1') === `${SPEC_ID_03}\0`;
  if (isSpecId03) {
    if (!header.digests[0]!.digest.equals(Buffer.alloc(SHA1_SIZE))) {
      throw new EventLogError('Spec ID header event has a non-zero digest', { offset: header.offset + 8, field: 'digest' });
    }
    const spec = parseSpecIdEvent(header.data, header.offset + 32, opts);
    log.format = 'crypto-agile';
    log.specId = spec;
    log.banks = spec.algorithms.map((a) => a.bank);
    const algs = new Map(spec.algorithms.map((a) => [a.algId, a]));
    while (c.pos < c.end) {
      const at = c.pos;
      try {
        events.push(readEvent2(c, events.length, algs, opts.strictDigestCount ?? false));
      } catch (e) {
        if (stopAtFillOrTorn(e, at)) break;
      }
    }
  } else {
    while (c.pos < c.end) {
      const at = c.pos;
      // A zero-filled tail parses as valid SHA-1 records (PCR 0, EV_PREBOOT_CERT, size 0): check first.
      if (buf[at] === 0 && isFill(buf, at)) {
        log.padding = { offset: at, length: buf.length - at };
        break;
      }
      try {
        events.push(readSha1Record(c, events.length));
      } catch (e) {
        if (stopAtFillOrTorn(e, at)) break;
      }
    }
  }
  const last = events[events.length - 1]!;
  log.byteLength = last.offset + last.length;
  return log;
}
