import { createHash } from 'node:crypto';
import { EXIT, HyperEnclaveError } from '../errors.js';

/**
 * The driver/hypercall ABI in TypeScript, numbered exactly as docs/hypercall-abi.md and
 * hypervisor/core/src/hypercall.rs (the source of truth). Records are decoded here once and
 * used by both clients (emulated RPC and /dev/hyperenclave ioctls).
 */

export const ABI_VERSION = 0x0001_0000;
export const abiMajor = (v: number): number => v >>> 16;
export const abiMinor = (v: number): number => v & 0xffff;
export const formatAbiVersion = (v: number): string => `${abiMajor(v)}.${abiMinor(v)}`;

export const HC = {
  VERSION: 0x00,
  STATUS: 0x01,
  ENABLE: 0x02,
  DISABLE: 0x03,
  IMAGE_DIGEST: 0x04,
  ENCLAVE_CREATE: 0x10,
  ENCLAVE_ADD: 0x11,
  ENCLAVE_EXTEND: 0x12,
  ENCLAVE_INIT: 0x13,
  ENCLAVE_ENTER: 0x14,
  ENCLAVE_EXIT: 0x15,
  ENCLAVE_DESTROY: 0x16,
  ENCLAVE_INFO: 0x17,
  /** Runs one ECALL; served by the bare-metal image (the emulated platform runs enclaves on KVM). */
  ENCLAVE_CALL: 0x18,
  /** Resumes a thread parked in an OCALL with the host's answer; bare-metal image. */
  ENCLAVE_OCALL_RETURN: 0x19,
  /** Registers the enclave's shared (untrusted) region before EINIT; never protected memory. */
  ENCLAVE_SHARED_ADD: 0x1a,
  /** Enclave-only (EREPORT): the host gets ENCLAVE_ONLY. */
  REPORT: 0x20,
  VERIFY_REPORT: 0x21,
  /** Enclave-only (EGETKEY): the host gets ENCLAVE_ONLY. */
  GET_KEY: 0x22,
  KEYSLOT_ALLOC: 0x30,
  KEYSLOT_BIND: 0x31,
  KEYSLOT_RELEASE: 0x32,
  KEYSLOT_FLUSH: 0x33,
  /** Unseal (or create and seal) the TPM-held root secret; served by the platform owning the TPM transport. */
  TRUST_INIT: 0x40,
  HAK_PUBLIC: 0x41,
  QUOTE: 0x42,
  /** EDMM: EAUG (pages PENDING until the enclave EACCEPTs them); needs SECS.ATTRIBUTES.EDMM. */
  ENCLAVE_AUGMENT: 0x24,
  /** EDMM: EMODPR (permissions only shrink; MODIFIED until EACCEPT). */
  ENCLAVE_RESTRICT: 0x25,
  /** EDMM: EMODT to TRIM (MODIFIED until EACCEPT). */
  ENCLAVE_MODIFY_TYPE: 0x26,
  /** EDMM: EREMOVE of accepted TRIM pages. */
  ENCLAVE_REMOVE: 0x27,
} as const;
export type HypercallName = keyof typeof HC;

/** Status codes (RAX on return): name, one-line meaning, CLI exit code. */
export const HC_STATUS: readonly { code: number; name: string; meaning: string; exit: number }[] = [
  { code: 0, name: 'SUCCESS', meaning: 'success', exit: EXIT.OK },
  { code: 1, name: 'UNKNOWN_CALL', meaning: 'unknown hypercall number', exit: EXIT.UNSUPPORTED },
  { code: 2, name: 'VERSION_MISMATCH', meaning: 'caller and hypervisor ABI majors differ', exit: EXIT.UNSUPPORTED },
  { code: 3, name: 'INVALID_ARGUMENT', meaning: 'misaligned value or bad range', exit: EXIT.BAD_INPUT },
  { code: 4, name: 'BUFFER_TOO_SMALL', meaning: 'output buffer too small', exit: EXIT.BAD_INPUT },
  { code: 5, name: 'HOST_ACCESS_DENIED', meaning: 'buffer lies in hypervisor or enclave memory (host fault)', exit: EXIT.BAD_INPUT },
  { code: 6, name: 'NOT_ENABLED', meaning: 'hypervisor is not enabled', exit: EXIT.USAGE },
  { code: 7, name: 'ALREADY_ENABLED', meaning: 'hypervisor is already enabled', exit: EXIT.USAGE },
  { code: 8, name: 'ENCLAVES_ALIVE', meaning: 'enclaves still exist; destroy them first', exit: EXIT.USAGE },
  { code: 9, name: 'NO_SUCH_ENCLAVE', meaning: 'no enclave with that id', exit: EXIT.NOT_FOUND },
  { code: 10, name: 'TOO_MANY_ENCLAVES', meaning: 'enclave limit reached', exit: EXIT.BAD_INPUT },
  { code: 11, name: 'ENCLAVE_STATE', meaning: 'operation not allowed in the enclave state (e.g. add after init)', exit: EXIT.BAD_INPUT },
  { code: 12, name: 'SECS_INVALID', meaning: 'SECS field invalid (size, base, attributes, xfrm, ssa)', exit: EXIT.BAD_INPUT },
  { code: 13, name: 'SECINFO_INVALID', meaning: 'SECINFO flags invalid', exit: EXIT.BAD_INPUT },
  { code: 14, name: 'TCS_INVALID', meaning: 'TCS page invalid', exit: EXIT.BAD_INPUT },
  { code: 15, name: 'PAGE_OVERLAP', meaning: 'a page already exists at that offset', exit: EXIT.BAD_INPUT },
  { code: 16, name: 'OUTSIDE_ELRANGE', meaning: 'offset beyond the declared enclave size', exit: EXIT.BAD_INPUT },
  { code: 17, name: 'PAGE_NOT_ADDED', meaning: 'no page added at that offset', exit: EXIT.BAD_INPUT },
  { code: 18, name: 'SIGSTRUCT_INVALID', meaning: 'SIGSTRUCT malformed', exit: EXIT.BAD_INPUT },
  { code: 19, name: 'SIGNATURE_INVALID', meaning: 'SIGSTRUCT RSA signature does not verify', exit: EXIT.VERIFY_FAILED },
  { code: 20, name: 'ATTRIBUTES_MISMATCH', meaning: 'enclave attributes/MISCSELECT differ from the SIGSTRUCT under its masks', exit: EXIT.VERIFY_FAILED },
  { code: 21, name: 'MEASUREMENT_MISMATCH', meaning: 'MRENCLAVE differs from SIGSTRUCT.ENCLAVEHASH', exit: EXIT.VERIFY_FAILED },
  { code: 22, name: 'TCS_BUSY', meaning: 'TCS already entered', exit: EXIT.BAD_INPUT },
  { code: 23, name: 'TCS_NOT_ENTERED', meaning: 'TCS was not entered', exit: EXIT.BAD_INPUT },
  { code: 24, name: 'ENCLAVE_BUSY', meaning: 'threads still inside the enclave', exit: EXIT.BAD_INPUT },
  { code: 25, name: 'EPC_EXHAUSTED', meaning: 'enclave page cache exhausted', exit: EXIT.BAD_INPUT },
  { code: 26, name: 'OUT_OF_MEMORY', meaning: 'page-table pool exhausted', exit: EXIT.INTERNAL },
  { code: 27, name: 'REPORT_MAC_MISMATCH', meaning: 'REPORT MAC does not verify', exit: EXIT.VERIFY_FAILED },
  { code: 28, name: 'KEYREQUEST_INVALID', meaning: 'KEYREQUEST field invalid', exit: EXIT.BAD_INPUT },
  { code: 29, name: 'SVN_TOO_HIGH', meaning: 'requested SVN above the enclave\'s own', exit: EXIT.BAD_INPUT },
  { code: 30, name: 'KEYSLOTS_EXHAUSTED', meaning: 'no free key slot (ASID/KeyID); released ones need a flush', exit: EXIT.BAD_INPUT },
  { code: 31, name: 'KEYSLOT_INVALID', meaning: 'key slot not allocated or out of range', exit: EXIT.BAD_INPUT },
  { code: 32, name: 'NO_KEYSLOTS', meaning: 'platform has no memory-encryption key slots', exit: EXIT.UNSUPPORTED },
  { code: 33, name: 'INTERNAL_ERROR', meaning: 'hypervisor internal error', exit: EXIT.INTERNAL },
  { code: 34, name: 'ENCLAVE_INTERRUPTED', meaning: 'an interrupt arrived while the enclave ran; call again to resume', exit: EXIT.INTERNAL },
  { code: 35, name: 'ENCLAVE_FAULT', meaning: 'the enclave thread faulted and was ended (see the hypervisor log)', exit: EXIT.BAD_INPUT },
  { code: 36, name: 'ENCLAVE_ONLY', meaning: 'REPORT and GET_KEY are served only to a running enclave, never to the host', exit: EXIT.USAGE },
  { code: 37, name: 'TRUST_NOT_ESTABLISHED', meaning: 'the root of trust is not established (TRUST_INIT has not run since load or enable)', exit: EXIT.USAGE },
  { code: 38, name: 'TRUST_SEAL_FAILED', meaning: 'the TPM refused to seal or unseal the root secret, or the sealed root is not for this hypervisor and PCR state', exit: EXIT.VERIFY_FAILED },
  { code: 39, name: 'TPM_IO', meaning: 'the hypervisor could not talk to the TPM', exit: EXIT.INTERNAL },
  { code: 40, name: 'ENCLAVE_OCALL', meaning: 'the enclave thread made an OCALL and is parked; answer with ENCLAVE_OCALL_RETURN', exit: EXIT.INTERNAL },
  { code: 41, name: 'SSA_INVALID', meaning: 'ERESUME found a forged SSA frame; the enclave thread was ended', exit: EXIT.BAD_INPUT },
  { code: 42, name: 'PAGE_STATE', meaning: 'EDMM step on a page in the wrong state, or EACCEPT flags that do not match it', exit: EXIT.BAD_INPUT },
];
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

export const PAGE_SIZE = 4096;
export const STATUS_SIZE = 256;
export const ENCLAVE_INFO_SIZE = 128;
export const REPORT_SIZE = 432;
export const SECS_SIZE = 64;
export const SIGSTRUCT_SIZE = 1808;
export const TARGETINFO_SIZE = 56;
export const KEYREQUEST_SIZE = 80;
/** QUOTE output (docs/hypercall-abi.md): "HEQ1", version, algorithm, HAK PCR, body, HAK, Ed25519 signature. */
export const QUOTE_SIZE = 496;
/** HAK: Ed25519 public key bytes. */
export const HAK_PUBLIC_SIZE = 32;
/** TRUST_INIT's output buffer (RCX) is at least this; a blob given in is at most this. */
export const TRUST_BLOB_CAPACITY = 4096;
/** TRUST_INIT flags (RSI on return). */
export const TRUST_FLAG_CREATED = 1;
export const TRUST_FLAG_PCR_EXTENDED = 2;
/** TARGETINFO.MEASUREMENT an enclave's EREPORT names to be quoted: SHA-256("HyperEnclave-TS quoting identity v1"). */
export const QUOTING_IDENTITY_LABEL = 'HyperEnclave-TS quoting identity v1';
export const QUOTING_TARGET_MRENCLAVE = createHash('sha256').update(QUOTING_IDENTITY_LABEL, 'ascii').digest();
/** The HAK event's data: this prefix, then the key's 64 lowercase hex characters (extended into the HAK PCR). */
export const HAK_EVENT_PREFIX = 'hyperenclave-hak:ed25519:';
export const hakEventData = (hak: Buffer): Buffer => Buffer.from(HAK_EVENT_PREFIX + hak.toString('hex'), 'ascii');
/** What the bare-metal hypervisor extends into its PCR at DISABLE (hypervisor/core/src/trust.rs EXIT_EVENT). */
export const HYPERVISOR_EXIT_EVENT = 'hyperenclave:hypervisor-exit v=1';
/** The sealer payload's ECALL that EREPORTs for the quoting identity (64-byte REPORTDATA in, 432-byte REPORT out). */
export const ECALL_QUOTE_REPORT = 4;
export const MEMMAP_ENTRY_SIZE = 24;
export const MAX_MEMMAP_ENTRIES = 128;

/** SECINFO.FLAGS: R/W/X in bits 2:0, page type in 15:8. */
export const SECINFO = { R: 1, W: 2, X: 4, PT_TCS: 1 << 8, PT_REG: 2 << 8 } as const;
export const ATTR = { INIT: 1n, DEBUG: 2n, MODE64BIT: 4n, PROVISIONKEY: 16n, EINITTOKENKEY: 32n, KSS: 128n } as const;
export const KEYNAME = { REPORT: 3, SEAL: 4 } as const;
export const KEYPOLICY = { MRENCLAVE: 1, MRSIGNER: 2, NOISVPRODID: 4 } as const;

export type MemKindName = 'ram' | 'reserved' | 'mmio';
export const MEM_KIND_CODE: Record<MemKindName, number> = { ram: 0, reserved: 1, mmio: 2 };
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

function need(buf: Uint8Array, size: number, what: string): Buffer {
  if (buf.length < size) throw new HypervisorError(`${what}: record is ${buf.length} bytes, need ${size}`, EXIT.BAD_INPUT);
  return Buffer.from(buf.buffer, buf.byteOffset, buf.length);
}

/** STATUS (256 B): 26 LE u64 words, the 32-byte image digest, then DMA faults and the IOMMU base. */
export function decodeStatus(raw: Uint8Array): HvStatusRecord {
  const b = need(raw, STATUS_SIZE, 'STATUS');
  const w = (i: number): bigint => b.readBigUInt64LE(i * 8);
  const n = (i: number): number => Number(w(i));
  const flags = n(1);
  const kind = n(12);
  return {
    abiVersion: n(0),
    enabled: (flags & 1) !== 0,
    paging: flags & 2 ? 'npt' : 'ept',
    keySlotsPresent: (flags & 4) !== 0,
    signaturesRequired: (flags & 8) !== 0,
    trustEstablished: (flags & 16) !== 0,
    reservedBase: w(2),
    hypervisorBytes: w(3),
    imageBytes: w(4),
    epcBytes: w(5),
    epcPagesTotal: n(6),
    epcPagesUsed: n(7),
    poolFramesTotal: n(8),
    poolFramesUsed: n(9),
    enclaves: n(10),
    enclaveLimit: n(11),
    keySlotKind: kind === 1 ? 'asid' : kind === 2 ? 'keyid' : 'none',
    keySlotMin: n(13),
    keySlotMax: n(14),
    keySlotsAllocated: n(15),
    keySlotsPendingFlush: n(16),
    flushes: n(17),
    hostFaults: { hypervisor: n(18), enclave: n(19), unmapped: n(20), permission: n(21) },
    dma: { protected: (flags & 32) !== 0, faults: Number(b.readBigUInt64LE(240)), iommuBase: b.readBigUInt64LE(248) },
    hypercalls: n(22),
    enclavesCreated: n(23),
    enclavesDestroyed: n(24),
    reportsIssued: n(25),
    imageDigest: Buffer.from(b.subarray(208, 240)),
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
  const b = need(raw, ENCLAVE_INFO_SIZE, 'ENCLAVE_INFO');
  return {
    state: b.readUInt32LE(0) === 1 ? 'initialized' : 'created',
    epcPages: b.readUInt32LE(4),
    threadsInside: b.readUInt32LE(8),
    ssaFrameSize: b.readUInt32LE(12),
    base: b.readBigUInt64LE(16),
    size: b.readBigUInt64LE(24),
    nestedPointer: b.readBigUInt64LE(32),
    mrenclave: Buffer.from(b.subarray(40, 72)),
    mrsigner: Buffer.from(b.subarray(72, 104)),
    attributes: b.readBigUInt64LE(104),
    xfrm: b.readBigUInt64LE(112),
    miscSelect: b.readUInt32LE(120),
    isvProdId: b.readUInt16LE(124),
    isvSvn: b.readUInt16LE(126),
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

/** SECS (64 B): SIZE @0, BASEADDR @8, SSAFRAMESIZE @16, MISCSELECT @20, ATTRIBUTES.FLAGS @48, XFRM @56. */
export function encodeSecs(s: SecsSpec): Buffer {
  const b = Buffer.alloc(SECS_SIZE);
  b.writeBigUInt64LE(s.size, 0);
  b.writeBigUInt64LE(s.base, 8);
  b.writeUInt32LE(s.ssaFrameSize, 16);
  b.writeUInt32LE(s.miscSelect ?? 0, 20);
  b.writeBigUInt64LE(s.attributes, 48);
  b.writeBigUInt64LE(s.xfrm, 56);
  return b;
}

/** ENABLE memory map: 24-byte entries start u64, size u64, kind u64. */
export function encodeMemoryMap(ranges: readonly MemRangeSpec[]): Buffer {
  if (ranges.length === 0 || ranges.length > MAX_MEMMAP_ENTRIES)
    throw new HypervisorError(`ENABLE: memory map has ${ranges.length} entries (1..${MAX_MEMMAP_ENTRIES} allowed)`, EXIT.BAD_INPUT);
  const b = Buffer.alloc(ranges.length * MEMMAP_ENTRY_SIZE);
  ranges.forEach((r, i) => {
    b.writeBigUInt64LE(r.start, i * 24);
    b.writeBigUInt64LE(r.size, i * 24 + 8);
    b.writeBigUInt64LE(BigInt(MEM_KIND_CODE[r.kind]), i * 24 + 16);
  });
  return b;
}

export function decodeMemoryMap(raw: Uint8Array): MemRangeSpec[] {
  const b = Buffer.from(raw);
  if (b.length % MEMMAP_ENTRY_SIZE !== 0) throw new HypervisorError(`memory map: ${b.length} bytes is not a multiple of ${MEMMAP_ENTRY_SIZE}`, EXIT.BAD_INPUT);
  const kinds: MemKindName[] = ['ram', 'reserved', 'mmio'];
  const out: MemRangeSpec[] = [];
  for (let at = 0; at < b.length; at += MEMMAP_ENTRY_SIZE) {
    const k = Number(b.readBigUInt64LE(at + 16));
    const kind = kinds[k];
    if (!kind) throw new HypervisorError(`memory map entry ${at / MEMMAP_ENTRY_SIZE} (byte ${at + 16}): kind ${k} is not 0 RAM, 1 reserved or 2 MMIO`, EXIT.BAD_INPUT);
    out.push({ start: b.readBigUInt64LE(at), size: b.readBigUInt64LE(at + 8), kind });
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

/** Mirrors hypervisor/driver/hyperenclave_ioctl.h (ioctl ABI 1.1: buffers packed into one page, HE_BUF_ARG_MASK; 1.2: he_probe.target; 1.3: DMA words in hv_status; 1.4: the driver resumes interrupted ECALLs). */
export const IOCTL_ABI_VERSION = 0x0001_0004;
/** he_hypercall.buf_arg bits 31:16 (1.4): resume budget in ms for ENCLAVE_CALL / ENCLAVE_OCALL_RETURN (the driver loops on ENCLAVE_INTERRUPTED). */
export const HE_RESUME_BUDGET_SHIFT = 16;
/** he_hypercall.buf_arg flag (1.1): bits 0-4 mark RDI..R8 as offsets into the buffer the driver relocates. */
export const HE_BUF_ARG_MASK = 0x100;
/** Largest he_hypercall buffer the driver copies (1.2; 4096 before): physically contiguous pages. */
export const HE_HYPERCALL_BUF_MAX = 16384;
export const HE_IOC_MAGIC = 'H'.charCodeAt(0);
const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;
export function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (HE_IOC_MAGIC << 8) | nr) >>> 0;
}
export const HE_STRUCT_SIZE = { version: 16, load: 192, status: 336, hypercall: 64, probe: 24 } as const;
export const HE_IOC = {
  VERSION: ioc(IOC_READ | IOC_WRITE, 0x00, HE_STRUCT_SIZE.version),
  LOAD: ioc(IOC_READ | IOC_WRITE, 0x01, HE_STRUCT_SIZE.load),
  ENABLE: ioc(IOC_NONE, 0x02, 0),
  DISABLE: ioc(IOC_NONE, 0x03, 0),
  STATUS: ioc(IOC_READ, 0x04, HE_STRUCT_SIZE.status),
  HYPERCALL: ioc(IOC_READ | IOC_WRITE, 0x05, HE_STRUCT_SIZE.hypercall),
  PROBE: ioc(IOC_READ | IOC_WRITE, 0x06, HE_STRUCT_SIZE.probe),
} as const;
export const HE_STATE = { EMPTY: 0, LOADED: 1, ENABLED: 2 } as const;

export function encodeHeVersion(): Buffer {
  const b = Buffer.alloc(HE_STRUCT_SIZE.version);
  b.writeUInt32LE(IOCTL_ABI_VERSION, 0);
  return b;
}
export function decodeHeVersion(b: Buffer): { ioctlAbi: number; hypercallAbi: number; hvAbi: number } {
  need(b, HE_STRUCT_SIZE.version, 'he_version');
  return { ioctlAbi: b.readUInt32LE(0), hypercallAbi: b.readUInt32LE(4), hvAbi: b.readUInt32LE(8) };
}
export function encodeHeLoad(firmware: string): Buffer {
  const b = Buffer.alloc(HE_STRUCT_SIZE.load);
  const name = Buffer.from(firmware, 'utf8');
  if (name.length > 127) throw new HypervisorError(`he_load.firmware: name is ${name.length} bytes (at most 127)`, EXIT.BAD_INPUT);
  name.copy(b, 0);
  return b;
}
export function decodeHeLoad(b: Buffer): { imageLength: bigint; loadAddress: bigint; loadSize: bigint; imageSha256: Buffer; pcr: number; banks: number } {
  need(b, HE_STRUCT_SIZE.load, 'he_load');
  return {
    imageLength: b.readBigUInt64LE(128),
    loadAddress: b.readBigUInt64LE(136),
    loadSize: b.readBigUInt64LE(144),
    imageSha256: Buffer.from(b.subarray(152, 184)),
    pcr: b.readUInt32LE(184),
    banks: b.readUInt32LE(188),
  };
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
  need(b, HE_STRUCT_SIZE.status, 'he_status');
  const hvLen = Number(b.readBigUInt64LE(72));
  return {
    ioctlAbi: b.readUInt32LE(0),
    state: b.readUInt32LE(4),
    reservedBase: b.readBigUInt64LE(8),
    reservedSize: b.readBigUInt64LE(16),
    imageLength: b.readBigUInt64LE(24),
    imageSha256: Buffer.from(b.subarray(32, 64)),
    pcr: b.readUInt32LE(64),
    cpusEnabled: b.readUInt32LE(68),
    hv: hvLen >= STATUS_SIZE ? decodeStatus(b.subarray(80, 80 + STATUS_SIZE)) : undefined,
  };
}
/** he_hypercall: rax, rdi, rsi, rdx, rcx, r8, then buf (user pointer) @48, buf_len @56, buf_arg @60 (1 = RDI .. 5 = R8, or HE_BUF_ARG_MASK | bits). */
export function encodeHeHypercall(nr: number, args: readonly bigint[], buf?: { pointer: bigint; length: number; arg: number }): Buffer {
  const b = Buffer.alloc(HE_STRUCT_SIZE.hypercall);
  b.writeBigUInt64LE(BigInt(nr), 0);
  args.slice(0, 5).forEach((a, i) => b.writeBigUInt64LE(a, 8 + i * 8));
  if (buf) {
    if (buf.length > HE_HYPERCALL_BUF_MAX) throw new HypervisorError(`he_hypercall: buffer of ${buf.length} bytes (the driver copies at most ${HE_HYPERCALL_BUF_MAX})`, EXIT.BAD_INPUT);
    b.writeBigUInt64LE(buf.pointer, 48);
    b.writeUInt32LE(buf.length, 56);
    b.writeUInt32LE(buf.arg, 60);
  }
  return b;
}
export const HE_HYPERCALL_BUF_POINTER_AT = 48;
export function decodeHeHypercall(b: Buffer): { rax: bigint; rdi: bigint; rsi: bigint; rdx: bigint; r8: bigint } {
  need(b, HE_STRUCT_SIZE.hypercall, 'he_hypercall');
  return { rax: b.readBigUInt64LE(0), rdi: b.readBigUInt64LE(8), rsi: b.readBigUInt64LE(16), rdx: b.readBigUInt64LE(24), r8: b.readBigUInt64LE(40) };
}
