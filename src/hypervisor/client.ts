import type { BackendKind, LaunchMeasurement } from '../enclave/backends/index.js';
import type { EnclaveInfoRecord, HvStatusRecord, MemRangeSpec, SecsSpec } from './abi.js';

/**
 * One client of the driver ABI. `emulated`: RPC to the long-lived service process holding the
 * Rust core; `linux`: ioctls on /dev/hyperenclave. Both are created by src/platform.
 * Binary values are Buffers; 64-bit quantities are bigints.
 */

export interface LoadedImage {
  /** Stable identity: the container id (SHA-256 of its header) or, for a bare file, its SHA-256. */
  id: string;
  path: string;
  /** SHA-256 of the image bytes: the value measured into the TPM and returned by IMAGE_DIGEST. */
  sha256: string;
  format: 'container' | 'raw';
  length: number;
  loadedAt: string;
  /** linux: the driver measured the image while loading it (PCR and number of banks extended). */
  measured?: { pcr: number; banks: number };
}

export interface HypervisorStatus {
  platform: 'emulated' | 'linux';
  loaded: boolean;
  image: LoadedImage | null;
  /** Host demoted (ENABLE done). */
  enabled: boolean;
  cpus: number;
  /** The reserved region as the kernel command line gives it. */
  memmap: string | null;
  /** Decoded STATUS record (null before load). */
  hv: HvStatusRecord | null;
  enclaves: EnclaveSummary[];
  /** Service process facts (emulated) or driver facts (linux). */
  process: { pid: number; startedAt: string; stateDir: string } | null;
  /** Emulated: what an earlier service process held when it ended (lost), until the next load. */
  lost?: { previousPid: number; previousStartedAt: string; restartedAt: string; image: string | null; enabled: boolean; enclaves: number[]; message: string };
}

export interface EnclaveSummary {
  id: number;
  name: string;
  state: 'created' | 'initialized';
  epcPages: number;
  size: string;
  base: string;
  mrenclave: string;
  mrsigner: string;
  backend: BackendKind;
  keySlot: number | null;
}

/** An enclave as `enclave list` shows it, from the hypervisor's ENCLAVE_INFO record. */
export function enclaveSummary(id: number, name: string, i: EnclaveInfoRecord, backend: BackendKind, keySlot: number | null): EnclaveSummary {
  return {
    id,
    name,
    state: i.state,
    epcPages: i.epcPages,
    size: '0x' + i.size.toString(16),
    base: '0x' + i.base.toString(16),
    mrenclave: i.mrenclave.toString('hex'),
    mrsigner: i.mrsigner.toString('hex'),
    backend,
    keySlot,
  };
}

export interface EntryInfo {
  entry: bigint;
  tcs: bigint;
  ssa: bigint;
}

export interface LaunchResult {
  backend: BackendKind;
  keySlot: number | null;
  measurement: LaunchMeasurement;
}

export interface EcallRequest {
  /** ECALL number the payload dispatches on. */
  fn: number;
  /** Input bytes placed in the enclave's argument buffer. */
  input?: Buffer;
  /** TCS offset to enter through (default: the first TCS). */
  tcs?: bigint;
  /** Runaway budget of this ECALL in ms, time spent serving its OCALLs included (default: the platform's). */
  timeoutMs?: number;
}

export interface EcallResult {
  fn: number;
  ok: boolean;
  /** Return value (RAX at exit) when ok. */
  ret: bigint | null;
  output: Buffer;
  /** One line when the enclave faulted or ran away. */
  error: string | null;
  micros: number;
  /** OCALLs the host served during this ECALL (bare-metal path). */
  ocalls?: number;
}

/** OCALL index the enclave reserves for heap growth (rt's heap_grow; docs/hypercall-abi.md). */
export const OCALL_HEAP_GROW = 0xffff_ff00;
/** Error code an enclave gets for an OCALL the host could not serve (unknown index, handler threw). */
export const OCALL_FAILED = 7;

/** The caller's OCALL table (the same type as the KVM runner's, src/hypervisor/addon.ts): index →
 * (input) → output (null/undefined: empty; at most the shared buffer; a throw fails the OCALL). */
export type { OcallTable } from './enclave-vm.js';
import type { OcallTable } from './enclave-vm.js';

export interface EnclaveRunOptions {
  /** OCALLs the enclave may make during these ECALLs; an unknown index answers OCALL_FAILED. */
  ocalls?: OcallTable;
}

export type HostAccessKind = 'read' | 'write' | 'execute';

export interface TrustInitResult {
  /** A new root secret was created (no blob given). */
  created: boolean;
  /** The HAK event was extended into the HAK PCR by this call (log it). */
  pcrExtended: boolean;
  /** The new sealed root (only when created). */
  blob?: Buffer;
  hakPublic: Buffer;
  hakPcr: number;
}

/** What a hypervisor does itself, so callers ask for a behaviour instead of a platform name. */
export interface HypervisorTraits {
  /** An enclave with backend "none" still goes through a launch step (the emulated service's
   * backends model one); the bare-metal hypervisor has no memory-encryption launch. */
  readonly launchesPlainEnclaves: boolean;
  /** DISABLE extends the measurement PCR with the exit event before leaving (the image owns the
   * TPM); the host then logs that extension. */
  readonly capsPcrOnDisable: boolean;
  /** The hypervisor keeps the names enclaves were created with (the bare-metal one knows ids only). */
  readonly namesEnclaves: boolean;
}

export interface HypervisorClient {
  readonly platform: 'emulated' | 'linux';
  readonly traits: HypervisorTraits;
  version(callerAbi?: number): Promise<number>;
  status(): Promise<HypervisorStatus>;
  /** Load the measured hypervisor image container; `sha256` must match its image digest. */
  load(path: string, sha256: string): Promise<LoadedImage>;
  /** Demote the host: build the host tables from `memoryMap` (default: the platform's). */
  enable(memoryMap?: readonly MemRangeSpec[]): Promise<void>;
  disable(): Promise<void>;
  imageDigest(): Promise<Buffer>;
  /** linux: the PCR the driver measures loaded images into. */
  measurementPcr?(): Promise<number>;

  enclaveCreate(secs: SecsSpec, meta?: { name?: string }): Promise<number>;
  enclaveAdd(id: number, offset: bigint, page: Buffer, secinfoFlags: number): Promise<void>;
  enclaveExtend(id: number, offset: bigint): Promise<void>;
  /** EADD + 16 EEXTEND for each page, in one round trip (pages of 4096 B). */
  enclaveAddPages(id: number, pages: readonly { offset: bigint; data: Buffer; flags: number; measure: boolean }[]): Promise<void>;
  enclaveInit(id: number, sigstruct: Buffer): Promise<void>;
  enclaveEnter(id: number, tcsOffset: bigint): Promise<EntryInfo>;
  enclaveExit(id: number, tcsOffset: bigint): Promise<void>;
  /** Returns the EPC pages given back. */
  enclaveDestroy(id: number): Promise<number>;
  enclaveInfo(id: number): Promise<EnclaveInfoRecord>;
  enclaveList(): Promise<EnclaveSummary[]>;

  /** Checks a REPORT's MAC as enclave `targetMrenclave` would (host-callable; REPORT and GET_KEY are enclave-only). */
  verifyReport(report: Buffer, targetMrenclave: Buffer): Promise<boolean>;

  /**
   * TRUST_INIT: the hypervisor unseals its root secret from `blob` (or, without one, creates and
   * seals a new one: `blob` in the result is then the new sealed root to keep), derives its keys
   * and the HAK, and extends the HAK event into the HAK PCR when it is not already there.
   */
  trustInit(blob?: Buffer): Promise<TrustInitResult>;
  /** The hypervisor attestation key (Ed25519 public key) and the PCR it is bound in. */
  hakPublic(): Promise<{ key: Buffer; pcr: number }>;
  /** QUOTE: a 432-byte REPORT targeted at the quoting identity → the 496-byte HAK-signed quote. */
  quote(report: Buffer): Promise<Buffer>;

  keyslotAlloc(owner?: number): Promise<number>;
  keyslotBind(slot: number, owner: number): Promise<void>;
  keyslotRelease(slot: number): Promise<void>;
  keyslotFlush(): Promise<number>;

  /** Launch the enclave VM's memory through a memory-encryption backend (key slot from the core). */
  enclaveLaunch(id: number, backend: BackendKind, policy?: number): Promise<LaunchResult>;
  /** Run ECALLs in the enclave VM (KVM). */
  enclaveRun(id: number, ecalls: readonly EcallRequest[], opts?: EnclaveRunOptions): Promise<EcallResult[]>;
  /** Enclave memory as the enclave sees it and as the host (DRAM) holds it. */
  enclaveMemory(id: number, offset: bigint, length: number, view: 'enclave' | 'host'): Promise<Buffer>;
  /** A host access through the host's nested tables: null if allowed, else the fault line. */
  hostAccess(gpa: bigint, access: HostAccessKind): Promise<string | null>;

  close(): void;
}
