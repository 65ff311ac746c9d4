import type { HostAccessKind } from './client.js';

/**
 * The Rust core's `Hypervisor`, as the emulated service uses it: everything goes through
 * `hypercall` (= hypercall::dispatch) with the caller's memory, plus the host view
 * (`host_access`) and the raw reserved memory for the encrypted/enclave views.
 * Adapts whatever src/hypervisor/addon.ts exports to this shape.
 */
export interface CoreConfig {
  /** Reserved region (hypervisor + image + EPC). */
  base: bigint;
  total: bigint;
  hypervisorSize: bigint;
  imageSize: bigint;
  paging: 'ept' | 'npt';
  imageDigest: Buffer;
  /**
   * The TPM the core seals its root secret with (swtpm's server and control Unix sockets); the
   * core speaks to it itself at locality 2 (TRUST_INIT). Without it TRUST_INIT answers
   * UNKNOWN_CALL and nothing derived from the root (EREPORT, EGETKEY, QUOTE) is served.
   */
  tpm?: { server: string; ctrl: string };
  keySlots: { kind: 'asid' | 'keyid'; min: number; max: number } | null;
  requireSignedSigstruct: boolean;
}

export interface HypercallResult {
  status: number;
  rdi: bigint;
  rsi: bigint;
  rdx: bigint;
}

export interface CoreEnclavePage {
  offset: bigint;
  hpa: bigint;
  /** 1 TCS, 2 REG. */
  type: number;
  perms: number;
}

export interface CoreHv {
  /** hypercall::dispatch (dispatch_with_tpm for TRUST_INIT) with `guest` as the caller's memory starting at guest-physical `guestBase`. */
  hypercall(nr: number, args: readonly bigint[], guestBase: bigint, guest: Buffer): HypercallResult;
  /** Host access through the host's nested tables: null when allowed, else the fault line (counted). */
  hostAccess(gpa: bigint, access: HostAccessKind): string | null;
  enclavePages(id: number): CoreEnclavePage[];
  /** Reads reserved memory (the hypervisor's own view: EPC contents). */
  readPhys(pa: bigint, length: number): Buffer;
  /** Why enclave VMs cannot run here (/dev/kvm), or null. */
  kvmUnavailable(): string | null;
  /** A KVM VM over the EPC pages of an initialized enclave (EENTER/EEXIT/EREPORT/EGETKEY served by this core). */
  createVm(id: number, opts: { timeoutMs: number }): EnclaveVmHandle;
  close(): void;
}

export type EcallOutcome = { ok: true; status: number; output: Buffer; exits: number } | { ok: false; error: string; dead: boolean };

export interface EnclaveVmHandle {
  /** `ocall` returning false fails that OCALL (the enclave sees code 7). */
  ecall(tcs: bigint, fn: number, input: Buffer, ocall?: (nr: number, data: Buffer) => Buffer | null | false, timeoutMs?: number): EcallOutcome;
  /** The same on its own thread and vCPU: ECALLs on distinct TCSs overlap in time. */
  ecallAsync(tcs: bigint, fn: number, input: Buffer, ocall?: (nr: number, data: Buffer) => Buffer | null): Promise<EcallOutcome>;
  /** Host EDMM leaves (through the core); returns the pages affected. */
  edmm(op: 'augment' | 'restrict' | 'modifyType' | 'remove', offset: bigint, count: number, arg?: number): number;
  destroy(): void;
}

export interface CoreModule {
  createHypervisor(cfg: CoreConfig): CoreHv;
}

/** Loads the addon through src/hypervisor/addon.ts and adapts its core bindings. */
export async function loadCore(): Promise<CoreModule> {
  const { addonCore } = await import('./addon-adapter.js');
  return addonCore();
}
