import { createHash } from 'node:crypto';
import { EXIT, HyperEnclaveError } from '../errors.js';
import * as G from './abi.generated.js';

/**
 * The driver/hypercall ABI in TypeScript. Every number and layout comes from
 * ./abi.generated.ts, which abi-gen emits from the one definition in hypervisor/abi/src/lib.rs
 * (docs/hypercall-abi.md says how to add a hypercall); this module adds the record codecs and
 * the error type. Records are decoded here once and used by both clients (emulated RPC and
 * /dev/hyperenclave ioctls).
 */

export const { ABI_VERSION, HC, LAYOUT } = G;
export const abiMajor = (v: number): number => v >>> 16;
export const abiMinor = (v: number): number => v & 0xffff;
export const formatAbiVersion = (v: number): string => `${abiMajor(v)}.${abiMinor(v)}`;

export type HypercallName = keyof typeof HC;
export type StatusName = (typeof G.HC_STATUSES)[number]['name'];
export type ErrorClass = (typeof G.HC_STATUSES)[number]['class'];

/** The CLI exit code for each error class the ABI assigns a status. */
const CLASS_EXIT: Record<ErrorClass, number> = {
  ok: EXIT.OK,
  unsupported: EXIT.UNSUPPORTED,
  'bad-input': EXIT.BAD_INPUT,
  usage: EXIT.USAGE,
  'not-found': EXIT.NOT_FOUND,
  'verify-failed': EXIT.VERIFY_FAILED,
  internal: EXIT.INTERNAL,
};

/** Status codes (RAX on return): name, one-line meaning, CLI exit code. */
export const HC_STATUS: readonly { code: number; name: StatusName; meaning: string; exit: number }[] = G.HC_STATUSES.map((s) => ({
  code: s.code,
  name: s.name,
  meaning: s.meaning,
  exit: CLASS_EXIT[s.class],
}));
export const STATUS_CODE: Readonly<Record<string, number>> = Object.fromEntries(HC_STATUS.map((s) => [s.name, s.code]));

export function statusName(code: number): string {
  return HC_STATUS[code]?.name ?? `STATUS_${code}`;
}

/** A hypercall that returned non-SUCCESS (or an ABI-level failure), with its status name and exit code. */
export class HypervisorError extends HyperEnclaveError {
  readonly status: number | undefined;
  readonly statusName: string | undefined;
  constructor(message: string, exitCode: number = EXIT.INTERNAL, status?: number) {
    super(message, exitCode);
    this.status = status;
    this.statusName = status === undefined ? undefined : statusName(status);
  }

  /** `ENCLAVE_ADD: PAGE_OVERLAP (a page already exists at that offset): <detail>` */
  static fromStatus(call: string, status: number, detail?: string): HypervisorError {
    const s = HC_STATUS[status];
    const head = s ? `${call}: ${s.name} (${s.meaning})` : `${call}: unknown status ${status}`;
    return new HypervisorError(detail ? `${head}: ${detail}` : head, s?.exit ?? EXIT.INTERNAL, status);
  }
}

// ---------------------------------------------------------------- sizes and layouts

export const {
  PAGE_SIZE,
  STATUS_SIZE,
  ENCLAVE_INFO_SIZE,
  REPORT_SIZE,
  SECS_SIZE,
  SIGSTRUCT_SIZE,
  TARGETINFO_SIZE,
  KEYREQUEST_SIZE,
  QUOTE_SIZE,
  HAK_PUBLIC_SIZE,
  TRUST_BLOB_CAPACITY,
  MEMMAP_ENTRY_SIZE,
  MAX_MEMMAP_ENTRIES,
} = G.SIZES;
/** TRUST_INIT flags (RSI on return). */
export const TRUST_FLAG_CREATED = G.TRUST_FLAGS.CREATED;
export const TRUST_FLAG_PCR_EXTENDED = G.TRUST_FLAGS.PCR_EXTENDED;
/** TARGETINFO.MEASUREMENT an enclave's EREPORT names to be quoted: SHA-256 of the quoting identity label. */
export const QUOTING_IDENTITY_LABEL = G.LABELS.QUOTING_IDENTITY_LABEL;
export const QUOTING_TARGET_MRENCLAVE = createHash('sha256').update(QUOTING_IDENTITY_LABEL, 'ascii').digest();
/** The HAK event's data: this prefix, then the key's 64 lowercase hex characters (extended into the HAK PCR). */
export const HAK_EVENT_PREFIX = G.LABELS.HAK_EVENT_PREFIX;
export const hakEventData = (hak: Buffer): Buffer => Buffer.from(HAK_EVENT_PREFIX + hak.toString('hex'), 'ascii');
/** What the bare-metal hypervisor extends into its PCR at DISABLE. */
export const HYPERVISOR_EXIT_EVENT = G.LABELS.HYPERVISOR_EXIT_EVENT;
/** QUOTE output (LAYOUT.he_quote): magic, version, signature algorithm, signed span. */
export const QUOTE_MAGIC = G.LABELS.QUOTE_MAGIC;
export const QUOTE = G.QUOTE;
/** QUOTE `flags` bits (bytes 12..16). */
export const QUOTE_FLAGS = G.QUOTE_FLAGS;
/** ECALL status: the output length, or ECALL.ERROR | the enclave runtime's error code (RT_ERR). */
export const ECALL = G.ECALL;
export const RT_ERR = G.RT_ERR;
/** The sealer payload's ECALL that EREPORTs for the quoting identity (64-byte REPORTDATA in, 432-byte REPORT out). */
export const ECALL_QUOTE_REPORT = 4;

// ---------------------------------------------------------------- generated record layouts

type FieldType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | 'bytes' | 'array' | 'struct';
interface FieldSpec {
  readonly offset: number;
  readonly size: number;
  readonly type: FieldType;
}
interface RecordLayout {
  readonly size: number;
  readonly fields: { readonly [name: string]: FieldSpec };
}
type FieldValue<F> = F extends { type: 'u64' } ? bigint : F extends { type: 'u8' | 'u16' | 'u32' | 'i32' } ? number : Buffer;
/** A record decoded by its generated layout: u64 as bigint, narrower integers as number, the rest as bytes. */
export type Decoded<L extends RecordLayout> = { -readonly [K in keyof L['fields']]: FieldValue<L['fields'][K]> };

function need(buf: Uint8Array, size: number, what: string): Buffer {
  if (buf.length < size) throw new HypervisorError(`${what}: record is ${buf.length} bytes, need ${size}`, EXIT.BAD_INPUT);
  return Buffer.from(buf.buffer, buf.byteOffset, buf.length);
}

/** Decodes `raw` by a generated layout (LAYOUT.*); `what` names the record in the error. */
export function readRecord<L extends RecordLayout>(layout: L, raw: Uint8Array, what: string): Decoded<L> {
  const b = need(raw, layout.size, what);
  const out: Record<string, bigint | number | Buffer> = {};
  for (const [name, f] of Object.entries(layout.fields)) {
    switch (f.type) {
      case 'u8': out[name] = b.readUInt8(f.offset); break;
      case 'u16': out[name] = b.readUInt16LE(f.offset); break;
      case 'u32': out[name] = b.readUInt32LE(f.offset); break;
      case 'i32': out[name] = b.readInt32LE(f.offset); break;
      case 'u64': out[name] = b.readBigUInt64LE(f.offset); break;
      default: out[name] = Buffer.from(b.subarray(f.offset, f.offset + f.size));
    }
  }
  return out as Decoded<L>;
}

/** Encodes a record by a generated layout; fields left out are zero. */
export function writeRecord<L extends RecordLayout>(layout: L, values: Partial<Decoded<L>>, what: string): Buffer {
  const b = Buffer.alloc(layout.size);
  for (const [name, v] of Object.entries(values as Record<string, bigint | number | Uint8Array | undefined>)) {
    const f = layout.fields[name];
    if (!f) throw new HypervisorError(`${what}: no field ${name}`, EXIT.INTERNAL);
    if (v === undefined) continue;
    switch (f.type) {
      case 'u8': b.writeUInt8(v as number, f.offset); break;
      case 'u16': b.writeUInt16LE(v as number, f.offset); break;
      case 'u32': b.writeUInt32LE(v as number, f.offset); break;
      case 'i32': b.writeInt32LE(v as number, f.offset); break;
      case 'u64': b.writeBigUInt64LE(v as bigint, f.offset); break;
      default: {
        const bytes = v as Uint8Array;
        if (bytes.length > f.size) throw new HypervisorError(`${what}.${name}: ${bytes.length} bytes (at most ${f.size})`, EXIT.BAD_INPUT);
        b.set(bytes, f.offset);
      }
    }
  }
  return b;
}

/** SECINFO.FLAGS: R/W/X in bits 2:0, page type in 15:8. */
export const SECINFO = G.SECINFO;
/** ATTRIBUTES.FLAGS bits (bigint: the field is a u64). */
export const ATTR = Object.fromEntries(Object.entries(G.ATTR).map(([k, v]) => [k, BigInt(v)])) as { readonly [K in keyof typeof G.ATTR]: bigint };
export const KEYNAME = G.KEYNAME;
export const KEYPOLICY = G.KEYPOLICY;

export type MemKindName = Lowercase<keyof typeof G.MEM_KIND>;
export const MEM_KIND_CODE: Record<MemKindName, number> = { ram: G.MEM_KIND.RAM, reserved: G.MEM_KIND.RESERVED, mmio: G.MEM_KIND.MMIO };
export interface MemRangeSpec {
  start: bigint;
  size: bigint;
  kind: MemKindName;
}

export type SlotKindName = 'none' | 'asid' | 'keyid';

export interface HvStatusRecord {
  abiVersion: number;
  enabled: boolean;
  paging: 'ept' | 'npt';
  keySlotsPresent: boolean;
  signaturesRequired: boolean;
  /** TRUST_INIT ran since the last load/enable: EREPORT, EGETKEY, QUOTE and HAK_PUBLIC are served. */
  trustEstablished: boolean;
  reservedBase: bigint;
  hypervisorBytes: bigint;
  imageBytes: bigint;
  epcBytes: bigint;
  epcPagesTotal: number;
  epcPagesUsed: number;
  poolFramesTotal: number;
  poolFramesUsed: number;
  enclaves: number;
  enclaveLimit: number;
  keySlotKind: SlotKindName;
  keySlotMin: number;
  keySlotMax: number;
  keySlotsAllocated: number;
  keySlotsPendingFlush: number;
  flushes: number;
  hostFaults: { hypervisor: number; enclave: number; unmapped: number; permission: number };
  /** DMA protection: an IOMMU the hypervisor owns translates every device's DMA (flags bit 5). */
  dma: { protected: boolean; faults: number; iommuBase: bigint };
  hypercalls: number;
  enclavesCreated: number;
  enclavesDestroyed: number;
  reportsIssued: number;
  imageDigest: Buffer;
}

/** STATUS (LAYOUT.he_hv_status): u64 words, the 32-byte image digest, then DMA faults and the IOMMU base. */
export function decodeStatus(raw: Uint8Array): HvStatusRecord {
  const r = readRecord(LAYOUT.he_hv_status, raw, 'STATUS');
  const flag = (bit: number): boolean => (r.flags & BigInt(bit)) !== 0n;
  const n = (v: bigint): number => Number(v);
  const F = G.STATUS_FLAGS;
  return {
    abiVersion: n(r.abi_version),
    enabled: flag(F.ENABLED),
    paging: flag(F.NPT) ? 'npt' : 'ept',
    keySlotsPresent: flag(F.KEY_SLOTS),
    signaturesRequired: flag(F.SIGNATURES_REQUIRED),
    trustEstablished: flag(F.TRUST_ESTABLISHED),
    reservedBase: r.reserved_base,
    hypervisorBytes: r.hypervisor_bytes,
    imageBytes: r.image_bytes,
    epcBytes: r.epc_bytes,
    epcPagesTotal: n(r.epc_pages_total),
    epcPagesUsed: n(r.epc_pages_used),
    poolFramesTotal: n(r.pool_frames_total),
    poolFramesUsed: n(r.pool_frames_used),
    enclaves: n(r.enclaves),
    enclaveLimit: n(r.max_enclaves),
    keySlotKind: r.key_slot_kind === BigInt(G.SLOT_KIND.ASID) ? 'asid' : r.key_slot_kind === BigInt(G.SLOT_KIND.KEYID) ? 'keyid' : 'none',
    keySlotMin: n(r.slot_min),
    keySlotMax: n(r.slot_max),
    keySlotsAllocated: n(r.slots_allocated),
    keySlotsPendingFlush: n(r.slots_pending_flush),
    flushes: n(r.flushes),
    hostFaults: { hypervisor: n(r.faults_hypervisor), enclave: n(r.faults_enclave), unmapped: n(r.faults_unmapped), permission: n(r.faults_permission) },
    dma: { protected: flag(F.DMA_PROTECTED), faults: n(r.dma_faults), iommuBase: r.iommu_base },
    hypercalls: n(r.hypercalls),
    enclavesCreated: n(r.enclaves_created),
    enclavesDestroyed: n(r.enclaves_destroyed),
    reportsIssued: n(r.reports_issued),
    imageDigest: r.image_digest,
  };
}

export interface EnclaveInfoRecord {
  state: 'created' | 'initialized';
  epcPages: number;
  threadsInside: number;
  ssaFrameSize: number;
  base: bigint;
  size: bigint;
  nestedPointer: bigint;
  mrenclave: Buffer;
  mrsigner: Buffer;
  attributes: bigint;
  xfrm: bigint;
  miscSelect: number;
  isvProdId: number;
  isvSvn: number;
}

export function decodeEnclaveInfo(raw: Uint8Array): EnclaveInfoRecord {
  const r = readRecord(LAYOUT.he_enclave_info, raw, 'ENCLAVE_INFO');
  return {
    state: r.state === 1 ? 'initialized' : 'created',
    epcPages: r.epc_pages,
    threadsInside: r.threads_inside,
    ssaFrameSize: r.ssa_frame_size,
    base: r.base,
    size: r.size,
    nestedPointer: r.nested_pointer,
    mrenclave: r.mrenclave,
    mrsigner: r.mrsigner,
    attributes: r.attributes,
    xfrm: r.xfrm,
    miscSelect: r.misc_select,
    isvProdId: r.isv_prod_id,
    isvSvn: r.isv_svn,
  };
}

export interface ReportRecord {
  cpuSvn: Buffer;
  miscSelect: number;
  attributes: bigint;
  xfrm: bigint;
  mrenclave: Buffer;
  mrsigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  reportData: Buffer;
  keyId: Buffer;
  mac: Buffer;
  /** The bytes the MAC covers (0..384). */
  body: Buffer;
}

/** REPORT (432 B, SGX layout). */
export function parseReport(raw: Uint8Array): ReportRecord {
  const b = need(raw, REPORT_SIZE, 'REPORT');
  if (raw.length !== REPORT_SIZE) throw new HypervisorError(`REPORT: ${raw.length} bytes, expected exactly ${REPORT_SIZE}`, EXIT.BAD_INPUT);
  return {
    cpuSvn: Buffer.from(b.subarray(0, 16)),
    miscSelect: b.readUInt32LE(16),
    attributes: b.readBigUInt64LE(48),
    xfrm: b.readBigUInt64LE(56),
    mrenclave: Buffer.from(b.subarray(64, 96)),
    mrsigner: Buffer.from(b.subarray(128, 160)),
    isvProdId: b.readUInt16LE(256),
    isvSvn: b.readUInt16LE(258),
    reportData: Buffer.from(b.subarray(320, 384)),
    keyId: Buffer.from(b.subarray(384, 416)),
    mac: Buffer.from(b.subarray(416, 432)),
    body: Buffer.from(b.subarray(0, 384)),
  };
}

// ---------------------------------------------------------------- request encoders

export interface SecsSpec {
  size: bigint;
  base: bigint;
  ssaFrameSize: number;
  miscSelect?: number;
  attributes: bigint;
  xfrm: bigint;
}

/** SECS (LAYOUT.he_secs): SIZE, BASEADDR, SSAFRAMESIZE, MISCSELECT, ATTRIBUTES.FLAGS, XFRM. */
export function encodeSecs(s: SecsSpec): Buffer {
  return writeRecord(
    LAYOUT.he_secs,
    { size: s.size, base: s.base, ssa_frame_size: s.ssaFrameSize, misc_select: s.miscSelect ?? 0, attributes: s.attributes, xfrm: s.xfrm },
    'SECS',
  );
}

/** ENABLE memory map: LAYOUT.he_range entries (start, size, kind). */
export function encodeMemoryMap(ranges: readonly MemRangeSpec[]): Buffer {
  if (ranges.length === 0 || ranges.length > MAX_MEMMAP_ENTRIES)
    throw new HypervisorError(`ENABLE: memory map has ${ranges.length} entries (1..${MAX_MEMMAP_ENTRIES} allowed)`, EXIT.BAD_INPUT);
  return Buffer.concat(ranges.map((r) => writeRecord(LAYOUT.he_range, { start: r.start, size: r.size, kind: BigInt(MEM_KIND_CODE[r.kind]) }, 'memory map entry')));
}

export function decodeMemoryMap(raw: Uint8Array): MemRangeSpec[] {
  const b = Buffer.from(raw);
  if (b.length % MEMMAP_ENTRY_SIZE !== 0) throw new HypervisorError(`memory map: ${b.length} bytes is not a multiple of ${MEMMAP_ENTRY_SIZE}`, EXIT.BAD_INPUT);
  const kinds = Object.fromEntries(Object.entries(MEM_KIND_CODE).map(([name, code]) => [code, name as MemKindName]));
  const out: MemRangeSpec[] = [];
  for (let at = 0; at < b.length; at += MEMMAP_ENTRY_SIZE) {
    const e = readRecord(LAYOUT.he_range, b.subarray(at), 'memory map entry');
    const kind = kinds[Number(e.kind)];
    const kindAt = at + LAYOUT.he_range.fields.kind.offset;
    if (!kind) throw new HypervisorError(`memory map entry ${at / MEMMAP_ENTRY_SIZE} (byte ${kindAt}): kind ${e.kind} is not 0 RAM, 1 reserved or 2 MMIO`, EXIT.BAD_INPUT);
    out.push({ start: e.start, size: e.size, kind });
  }
  return out;
}

/** TARGETINFO (56 B used): MEASUREMENT @0, ATTRIBUTES @32 (flags, xfrm), MISCSELECT @52. */
export function encodeTargetInfo(t: { mrenclave: Uint8Array; attributes?: bigint; xfrm?: bigint; miscSelect?: number }): Buffer {
  const b = Buffer.alloc(TARGETINFO_SIZE);
  if (t.mrenclave.length !== 32) throw new HypervisorError(`TARGETINFO.MEASUREMENT: ${t.mrenclave.length} bytes, need 32`, EXIT.BAD_INPUT);
  b.set(t.mrenclave, 0);
  b.writeBigUInt64LE(t.attributes ?? 0n, 32);
  b.writeBigUInt64LE(t.xfrm ?? 0n, 40);
  b.writeUInt32LE(t.miscSelect ?? 0, 52);
  return b;
}

/** KEYREQUEST (80 B used): KEYNAME @0, KEYPOLICY @2, ISVSVN @4, CPUSVN @8, ATTRIBUTEMASK @24, KEYID @40, MISCMASK @72. */
export function encodeKeyRequest(k: {
  keyName: number;
  keyPolicy?: number;
  isvSvn?: number;
  cpuSvn?: Uint8Array;
  attributeMask?: [bigint, bigint];
  keyId?: Uint8Array;
  miscMask?: number;
}): Buffer {
  const b = Buffer.alloc(KEYREQUEST_SIZE);
  b.writeUInt16LE(k.keyName, 0);
  b.writeUInt16LE(k.keyPolicy ?? 0, 2);
  b.writeUInt16LE(k.isvSvn ?? 0, 4);
  if (k.cpuSvn) b.set(k.cpuSvn.subarray(0, 16), 8);
  b.writeBigUInt64LE(k.attributeMask?.[0] ?? 0xffff_ffff_ffff_ffffn, 24);
  b.writeBigUInt64LE(k.attributeMask?.[1] ?? 0n, 32);
  if (k.keyId) b.set(k.keyId.subarray(0, 32), 40);
  b.writeUInt32LE(k.miscMask ?? 0xffff_ffff, 72);
  return b;
}

// ---------------------------------------------------------------- /dev/hyperenclave ioctls

/** The ioctl ABI (hypervisor/driver/hyperenclave_ioctl.h, generated from the same source). */
export const IOCTL_ABI_VERSION = G.HE.HE_IOCTL_ABI_VERSION;
/** he_hypercall.buf_arg bits 31:16 (1.4): resume budget in ms for ENCLAVE_CALL / ENCLAVE_OCALL_RETURN (the driver loops on ENCLAVE_INTERRUPTED). */
export const HE_RESUME_BUDGET_SHIFT = G.HE.HE_RESUME_BUDGET_SHIFT;
/** he_hypercall.buf_arg flag (1.1): bits 0-4 mark RDI..R8 as offsets into the buffer the driver relocates. */
export const HE_BUF_ARG_MASK = G.HE.HE_BUF_ARG_MASK;
/** Largest he_hypercall buffer the driver copies (1.2; 4096 before): physically contiguous pages. */
export const HE_HYPERCALL_BUF_MAX = G.HE.HE_HYPERCALL_BUF_MAX;
export const HE_IOC_MAGIC = G.HE.HE_IOC_MAGIC;
export const HE_STRUCT_SIZE = {
  version: LAYOUT.he_version.size,
  load: LAYOUT.he_load.size,
  status: LAYOUT.he_status.size,
  hypercall: LAYOUT.he_hypercall.size,
  probe: LAYOUT.he_probe.size,
} as const;
export const HE_IOC = G.HE_IOC;
export const HE_STATE = { EMPTY: G.HE.HE_STATE_EMPTY, LOADED: G.HE.HE_STATE_LOADED, ENABLED: G.HE.HE_STATE_ENABLED } as const;

export function encodeHeVersion(): Buffer {
  return writeRecord(LAYOUT.he_version, { ioctl_abi: IOCTL_ABI_VERSION }, 'he_version');
}
export function decodeHeVersion(b: Buffer): { ioctlAbi: number; hypercallAbi: number; hvAbi: number } {
  const r = readRecord(LAYOUT.he_version, b, 'he_version');
  return { ioctlAbi: r.ioctl_abi, hypercallAbi: r.hypercall_abi, hvAbi: r.hv_abi };
}
export function encodeHeLoad(firmware: string): Buffer {
  const name = Buffer.from(firmware, 'utf8');
  const max = LAYOUT.he_load.fields.firmware.size - 1;
  if (name.length > max) throw new HypervisorError(`he_load.firmware: name is ${name.length} bytes (at most ${max})`, EXIT.BAD_INPUT);
  return writeRecord(LAYOUT.he_load, { firmware: name }, 'he_load');
}
export function decodeHeLoad(b: Buffer): { imageLength: bigint; loadAddress: bigint; loadSize: bigint; imageSha256: Buffer; pcr: number; banks: number } {
  const r = readRecord(LAYOUT.he_load, b, 'he_load');
  return { imageLength: r.image_length, loadAddress: r.load_address, loadSize: r.load_size, imageSha256: r.image_sha256, pcr: r.pcr, banks: r.banks };
}
export function decodeHeStatus(b: Buffer): {
  ioctlAbi: number;
  state: number;
  reservedBase: bigint;
  reservedSize: bigint;
  imageLength: bigint;
  imageSha256: Buffer;
  pcr: number;
  cpusEnabled: number;
  hv: HvStatusRecord | undefined;
} {
  const r = readRecord(LAYOUT.he_status, b, 'he_status');
  return {
    ioctlAbi: r.ioctl_abi,
    state: r.state,
    reservedBase: r.reserved_base,
    reservedSize: r.reserved_size,
    imageLength: r.image_length,
    imageSha256: r.image_sha256,
    pcr: r.pcr,
    cpusEnabled: r.cpus_enabled,
    hv: r.hv_status_len >= BigInt(STATUS_SIZE) ? decodeStatus(r.hv_status) : undefined,
  };
}
/** he_hypercall: rax, rdi .. r8, then buf (user pointer), buf_len, buf_arg (1 = RDI .. 5 = R8, or HE_BUF_ARG_MASK | bits). */
export function encodeHeHypercall(nr: number, args: readonly bigint[], buf?: { pointer: bigint; length: number; arg: number }): Buffer {
  const [rdi, rsi, rdx, rcx, r8] = args;
  if (buf && buf.length > HE_HYPERCALL_BUF_MAX) throw new HypervisorError(`he_hypercall: buffer of ${buf.length} bytes (the driver copies at most ${HE_HYPERCALL_BUF_MAX})`, EXIT.BAD_INPUT);
  return writeRecord(
    LAYOUT.he_hypercall,
    { rax: BigInt(nr), rdi, rsi, rdx, rcx, r8, ...(buf ? { buf: buf.pointer, buf_len: buf.length, buf_arg: buf.arg } : {}) },
    'he_hypercall',
  );
}
export const HE_HYPERCALL_BUF_POINTER_AT = LAYOUT.he_hypercall.fields.buf.offset;
export function decodeHeHypercall(b: Buffer): { rax: bigint; rdi: bigint; rsi: bigint; rdx: bigint; r8: bigint } {
  const r = readRecord(LAYOUT.he_hypercall, b, 'he_hypercall');
  return { rax: r.rax, rdi: r.rdi, rsi: r.rsi, rdx: r.rdx, r8: r.r8 };
}
