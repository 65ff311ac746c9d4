import { hashAlgById } from '../tpm/alg.js';
import { TxtError } from './registers.js';

/**
 * The TXT heap (Intel TXT MLE Developer's Guide, Appendix C): four tables, each preceded by its
 * u64 size (the size includes those 8 bytes): BIOS data, OS→MLE, OS→SINIT, SINIT→MLE.
 * The OS→SINIT table (version ≥ 6) ends in extended data elements, one of which points at the
 * DRTM event log: type 8 (EVENT_LOG_POINTER2_1, one TCG crypto-agile log) or type 7 (tboot's
 * EVENT_LOG_POINTER2, one log per hash algorithm).
 */

export const HEAP_EXTDATA = { END: 0, BIOS_SPEC_VER: 1, ACM: 2, STM: 3, CUSTOM: 4, TPM_EVENT_LOG_PTR: 5, MADT: 6, EVENT_LOG_POINTER2: 7, EVENT_LOG_POINTER2_1: 8, MCFG: 9 } as const;
const MAX_ELEMENTS = 64;
/** Offset of the extended data elements inside an OS→SINIT table of version ≥ 6. */
export const OS_SINIT_EXT_OFFSET = 92;
const MAX_LOG = 1024 * 1024;

export interface HeapTable {
  /** Offset of the table's data (after its u64 size) in the heap. */
  offset: number;
  data: Buffer;
}

export interface TxtHeap {
  biosData: HeapTable;
  osMleData: HeapTable;
  osSinitData: HeapTable;
  sinitMleData: HeapTable;
}

const hx = (n: number | bigint): string => `0x${n.toString(16)}`;

export function parseTxtHeap(heap: Buffer): TxtHeap {
  const names = ['BIOS data', 'OS to MLE data', 'OS to SINIT data', 'SINIT to MLE data'];
  const tables: HeapTable[] = [];
  let p = 0;
  for (const name of names) {
    if (p + 8 > heap.length) throw new TxtError(`TXT heap: ${name} size field at offset ${hx(p)} is past the heap's end (${heap.length} bytes)`);
    const size = heap.readBigUInt64LE(p);
    if (size < 8n || size > BigInt(heap.length - p)) throw new TxtError(`TXT heap: ${name} size ${hx(size)} at offset ${hx(p)} does not fit the ${heap.length}-byte heap`);
    tables.push({ offset: p + 8, data: heap.subarray(p + 8, p + Number(size)) });
    p += Number(size);
  }
  return { biosData: tables[0]!, osMleData: tables[1]!, osSinitData: tables[2]!, sinitMleData: tables[3]! };
}

export interface ExtElement {
  type: number;
  /** Offset of the element header in the heap. */
  offset: number;
  data: Buffer;
}

export interface OsSinitData {
  version: number;
  flags: number;
  mlePtab: bigint;
  mleSize: bigint;
  mleHeaderBase: bigint;
  capabilities: number;
  elements: ExtElement[];
}

export function parseExtElements(buf: Buffer, heapOffset: number): ExtElement[] {
  const out: ExtElement[] = [];
  let p = 0;
  for (;;) {
    if (out.length >= MAX_ELEMENTS) throw new TxtError(`TXT heap: more than ${MAX_ELEMENTS} extended data elements at offset ${hx(heapOffset)}`);
    if (p + 8 > buf.length) throw new TxtError(`TXT heap: extended data element at offset ${hx(heapOffset + p)} runs past its table (no END element)`);
    const type = buf.readUInt32LE(p);
    const size = buf.readUInt32LE(p + 4);
    if (size < 8 || p + size > buf.length) throw new TxtError(`TXT heap: extended data element type ${type} at offset ${hx(heapOffset + p)} has size ${size}, outside 8..${buf.length - p}`);
    if (type === HEAP_EXTDATA.END) return out;
    out.push({ type, offset: heapOffset + p, data: buf.subarray(p + 8, p + size) });
    p += size;
  }
}

export function parseOsSinitData(t: HeapTable): OsSinitData {
  const d = t.data;
  if (d.length < OS_SINIT_EXT_OFFSET) throw new TxtError(`TXT heap: OS to SINIT data at offset ${hx(t.offset)} is ${d.length} bytes, version 6+ needs ${OS_SINIT_EXT_OFFSET}`);
  const version = d.readUInt32LE(0);
  if (version < 6) throw new TxtError(`TXT heap: OS to SINIT data version ${version} at offset ${hx(t.offset)} has no extended elements (needs 6+)`);
  return {
    version,
    flags: d.readUInt32LE(4),
    mlePtab: d.readBigUInt64LE(8),
    mleSize: d.readBigUInt64LE(16),
    mleHeaderBase: d.readBigUInt64LE(24),
    capabilities: d.readUInt32LE(80),
    elements: parseExtElements(d.subarray(OS_SINIT_EXT_OFFSET), t.offset + OS_SINIT_EXT_OFFSET),
  };
}

export interface PerAlgLogDescriptor {
  alg: number;
  physAddr: bigint;
  size: number;
  pcrEventsOffset: number;
  nextEventOffset: number;
}

export type DrtmLogPointer =
  | { kind: 'tcg-agile'; physAddr: bigint; allocatedSize: number; firstRecordOffset: number; nextRecordOffset: number }
  | { kind: 'tboot-per-alg'; logs: PerAlgLogDescriptor[] };

/** The DRTM event log pointer among the OS→SINIT elements (type 8 preferred over 7), if any. */
export function findDrtmLogPointer(os: OsSinitData): DrtmLogPointer | undefined {
  const e8 = os.elements.find((e) => e.type === HEAP_EXTDATA.EVENT_LOG_POINTER2_1);
  if (e8) {
    if (e8.data.length < 20) throw new TxtError(`TXT heap: EVENT_LOG_POINTER2_1 element at offset ${hx(e8.offset)} is ${e8.data.length} bytes, needs 20`);
    const p = { kind: 'tcg-agile' as const, physAddr: e8.data.readBigUInt64LE(0), allocatedSize: e8.data.readUInt32LE(8), firstRecordOffset: e8.data.readUInt32LE(12), nextRecordOffset: e8.data.readUInt32LE(16) };
    if (p.nextRecordOffset > p.allocatedSize) throw new TxtError(`TXT heap: EVENT_LOG_POINTER2_1 at offset ${hx(e8.offset)}: next record offset ${p.nextRecordOffset} beyond the allocated ${p.allocatedSize} bytes`);
    return p;
  }
  const e7 = os.elements.find((e) => e.type === HEAP_EXTDATA.EVENT_LOG_POINTER2);
  if (!e7) return undefined;
  if (e7.data.length < 4) throw new TxtError(`TXT heap: EVENT_LOG_POINTER2 element at offset ${hx(e7.offset)} has no count`);
  const count = e7.data.readUInt32LE(0);
  if (4 + count * 24 > e7.data.length) throw new TxtError(`TXT heap: EVENT_LOG_POINTER2 at offset ${hx(e7.offset)} claims ${count} logs, room for ${Math.floor((e7.data.length - 4) / 24)}`);
  const logs: PerAlgLogDescriptor[] = [];
  for (let i = 0; i < count; i++) {
    const o = 4 + i * 24;
    const d = { alg: e7.data.readUInt16LE(o), physAddr: e7.data.readBigUInt64LE(o + 4), size: e7.data.readUInt32LE(o + 12), pcrEventsOffset: e7.data.readUInt32LE(o + 16), nextEventOffset: e7.data.readUInt32LE(o + 20) };
    if (d.pcrEventsOffset > d.nextEventOffset || d.nextEventOffset > d.size)
      throw new TxtError(`TXT heap: log ${i} (alg ${hx(d.alg)}) at offset ${hx(e7.offset + 8 + o)}: events ${d.pcrEventsOffset}..${d.nextEventOffset} outside its ${d.size} bytes`);
    logs.push(d);
  }
  return { kind: 'tboot-per-alg', logs };
}

export interface DrtmLogEvent {
  pcr: number;
  type: number;
  digest: Buffer;
  data: Buffer;
  /** Offset of the record in its log. */
  offset: number;
}

/** tboot's per-algorithm records between pcr_events_offset and next_event_offset: {u32 pcr, u32 type, digest, u32 size, data}. */
export function parsePerAlgLog(log: Buffer, d: Pick<PerAlgLogDescriptor, 'alg' | 'pcrEventsOffset' | 'nextEventOffset'>): DrtmLogEvent[] {
  const alg = hashAlgById(d.alg);
  if (!alg) throw new TxtError(`TXT DRTM log: unknown hash algorithm ${hx(d.alg)}`);
  if (d.nextEventOffset > log.length) throw new TxtError(`TXT DRTM log (${alg.name}): next event offset ${d.nextEventOffset} beyond the ${log.length}-byte log`);
  const out: DrtmLogEvent[] = [];
  let p = d.pcrEventsOffset;
  while (p < d.nextEventOffset) {
    const fixed = 8 + alg.size + 4;
    if (p + fixed > d.nextEventOffset) throw new TxtError(`TXT DRTM log (${alg.name}): event at offset ${hx(p)} truncated (needs ${fixed} bytes before its data)`);
    const size = log.readUInt32LE(p + 8 + alg.size);
    if (p + fixed + size > d.nextEventOffset) throw new TxtError(`TXT DRTM log (${alg.name}): event at offset ${hx(p)} data size ${size} runs past the log end ${hx(d.nextEventOffset)}`);
    out.push({ pcr: log.readUInt32LE(p), type: log.readUInt32LE(p + 4), digest: Buffer.from(log.subarray(p + 8, p + 8 + alg.size)), data: Buffer.from(log.subarray(p + fixed, p + fixed + size)), offset: p });
    p += fixed + size;
  }
  return out;
}

export type PhysReader = (address: bigint, length: number) => Buffer;

export type DrtmLog =
  | { kind: 'tcg-agile'; pointer: Extract<DrtmLogPointer, { kind: 'tcg-agile' }>; /** raw TCG log bytes [0, nextRecordOffset) for src/eventlog */ log: Buffer }
  | { kind: 'tboot-per-alg'; logs: { alg: string; events: DrtmLogEvent[] }[] };

/** Finds and reads the DRTM event log the heap points at, through `readPhys` (e.g. /dev/mem). */
export function readDrtmLog(heap: Buffer, readPhys: PhysReader): DrtmLog | undefined {
  const os = parseOsSinitData(parseTxtHeap(heap).osSinitData);
  const ptr = findDrtmLogPointer(os);
  if (!ptr) return undefined;
  if (ptr.kind === 'tcg-agile') {
    if (ptr.nextRecordOffset > MAX_LOG) throw new TxtError(`TXT DRTM log: ${ptr.nextRecordOffset} bytes exceeds ${MAX_LOG}`);
    return { kind: 'tcg-agile', pointer: ptr, log: readPhys(ptr.physAddr, ptr.nextRecordOffset) };
  }
  return {
    kind: 'tboot-per-alg',
    logs: ptr.logs.map((d) => {
      if (d.nextEventOffset > MAX_LOG) throw new TxtError(`TXT DRTM log: ${d.nextEventOffset} bytes exceeds ${MAX_LOG}`);
      return { alg: hashAlgById(d.alg)?.name ?? hx(d.alg), events: parsePerAlgLog(readPhys(d.physAddr, d.nextEventOffset), d) };
    }),
  };
}
