import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT, HyperEnclaveError } from '../errors.js';
import { ECALL } from './abi.js';

/**
 * Loader and typed wrapper of the Node-API addon (hypervisor/addon, Rust): the syscall bridge
 * (CPUID, MSRs, typed /dev/hyperenclave calls, mmap). The KVM enclave runner is wrapped in
 * ./enclave-vm.ts, the bindings to hyperenclave-core in ./core-hypervisor.ts.
 * The .node file is found from the package root, so this works from src/ (vitest) and from
 * dist/src/ (after tsc).
 */

/** The addon is missing or refused a call (bad argument, OS error): one line, with `code`. */
export class AddonError extends HyperEnclaveError {
  readonly code: string | undefined;
  constructor(message: string, exitCode: number = EXIT.INTERNAL, code?: string) {
    super(message, exitCode);
    this.code = code;
  }
}

/** An enclave VM was ended (fault, triple fault, runaway, unexpected exit) or a call was refused. */
export class EnclaveVmError extends HyperEnclaveError {
  readonly code: string | undefined;
  /** True when the VM is gone: later calls fail with "is dead". */
  readonly dead: boolean;
  constructor(message: string, code?: string) {
    super(message, code === 'ERR_INVALID_ARG' ? EXIT.BAD_INPUT : EXIT.INTERNAL);
    this.code = code;
    this.dead = code === 'ERR_ENCLAVE_DEAD' || code === 'ERR_SSA_INVALID';
  }
}

export interface CpuidRegs {
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export interface RawEcall {
  status: number;
  output: Buffer;
  exits: number;
  /** Exceptions delivered to the enclave's handler (AEX) during the ECALL. */
  aex: number;
}

/** An OCALL handler as the addon calls it: a Buffer/Uint8Array is the answer, null/undefined an
 * empty one, `false` fails the OCALL (the enclave gets error code 7), a throw fails it and
 * surfaces the exception. */
export type RawOcall = (nr: number, input: Buffer) => Uint8Array | null | undefined | false;

export interface RawVmInfo {
  name: string;
  dead: string | null;
  ecalls: number;
  exits: number;
  sharedCapacity: number;
  timeoutMs: number;
  enclaveId: number | null;
}

type Int = number | bigint;

/** The raw addon exports (src: hypervisor/addon/src/exports.rs). */
export interface RawAddon {
  abiVersion: number;
  cpuid(leaf: number, subleaf?: number): CpuidRegs;
  cpuVendor(): string;
  readMsr(cpu: number, msr: number): bigint;
  /** /dev/hyperenclave, one typed call per ioctl (hypervisor/addon/src/device.rs): records (LAYOUT.he_*) in and out as bytes. */
  heVersion(fd: number, rec: Uint8Array): Buffer;
  heLoad(fd: number, rec: Uint8Array): Buffer;
  heEnable(fd: number): void;
  heDisable(fd: number): void;
  heStatus(fd: number): Buffer;
  /** The record's buf field is ignored: the addon points it at `staging`, which the driver copies in and back (buf_len bytes). */
  heHypercall(fd: number, rec: Uint8Array, staging: Uint8Array | null): Buffer;
  mmapOpen(fd: number, length: number, offset?: Int, writable?: boolean): number;
  mmapRead(handle: number, offset: number, length: number): Buffer;
  mmapWrite(handle: number, offset: number, data: Uint8Array): void;
  munmap(handle: number): void;
  kvmAvailable(): string | null;
  enclaveLoad(opts: {
    name?: string;
    base: Int;
    size: Int;
    image: Uint8Array;
    imageOffset?: Int;
    pages: { offset: Int; perms: number; tcs?: boolean }[];
    sharedPages?: number;
    timeoutMs?: number;
  }): number;
  enclaveEcall(
    vm: number,
    tcsOffset: Int,
    fn: number,
    input?: Uint8Array | null,
    opts?: { timeoutMs?: number; ocall?: RawOcall },
  ): RawEcall;
  /** The same on its own thread and vCPU: several run at once on distinct TCSs. */
  enclaveEcallAsync(vm: number, tcsOffset: Int, fn: number, input?: Uint8Array | null, opts?: { timeoutMs?: number; ocall?: RawOcall }): Promise<RawEcall>;
  /** Host EDMM leaves on a running enclave; returns the pages affected. */
  enclaveEdmm(vm: number, op: 'augment' | 'restrict' | 'modifyType' | 'remove', offset: Int, count: Int, arg?: Int): number;
  enclaveTcs(vm: number): number[];
  enclaveEcallFast(vm: number, tcsOffset: Int, fn: number, input?: Uint8Array | null): number;
  enclaveLastOutput(vm: number): Buffer;
  enclaveInfo(vm: number): RawVmInfo;
  enclaveDestroy(vm: number): void;
  hvCreate(cfg: {
    base: Int;
    total: Int;
    hypervisorSize: Int;
    imageSize?: Int;
    paging?: 'ept' | 'npt';
    imageDigest?: Uint8Array;
    /** swtpm's Unix sockets: the core seals its root secret there (TRUST_INIT at locality 2). */
    tpm?: { server: string; ctrl: string };
    /** PCRs of the root of trust (default 12 and 13). */
    trustPcrs?: { hypervisor: number; hak: number };
    keySlots?: { kind: 'asid' | 'keyid'; min?: number; max: number } | null;
    requireSignedSigstruct?: boolean;
  }): number;
  hvClose(hv: number): void;
  hvHypercall(hv: number, nr: number, args?: Int[], guestBase?: Int, guest?: Uint8Array): { status: number; rdi: bigint; rsi: bigint; rdx: bigint };
  hvAddPages(hv: number, id: number, image: Uint8Array, pages: { offset: number; secinfo: number }[], measure: boolean): void;
  hvHostAccess(hv: number, gpa: Int, access: 'read' | 'write' | 'execute'): string | null;
  hvEnclavePages(hv: number, id: number): { offset: bigint; hpa: bigint; type: number; perms: number }[];
  hvReadPhys(hv: number, pa: Int, length: number): Buffer;
  hvEnclaveRun(hv: number, id: number, opts?: { sharedPages?: number; timeoutMs?: number }): number;
  sigstructBuild(body: {
    enclaveHash: Uint8Array;
    vendor?: number;
    date?: number;
    miscSelect?: number;
    miscMask?: number;
    attributes?: bigint;
    xfrm?: bigint;
    attributeMask?: bigint;
    xfrmMask?: bigint;
    isvProdId?: number;
    isvSvn?: number;
  }): Buffer;
  sigstructSignedMessage(sigstruct: Uint8Array): Buffer;
  sigstructAttach(sigstruct: Uint8Array, modulusBE: Uint8Array, signatureBE: Uint8Array): Buffer;
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'hyperenclave-ts') return dir;
      } catch {
        /* keep walking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new AddonError('addon: cannot find the hyperenclave-ts package root above ' + fileURLToPath(import.meta.url), EXIT.INTERNAL);
    dir = up;
  }
}

export const addonPath = (): string => join(packageRoot(), 'hypervisor', 'addon', 'hyperenclave-addon.node');
export const enclavesOutDir = (): string => join(packageRoot(), 'hypervisor', 'enclaves', 'out');

let cached: RawAddon | undefined;

/** The raw addon; throws AddonError "addon not built: run make build" when the file is missing. */
export function loadAddon(): RawAddon {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) throw new AddonError(`addon not built: run make build (missing ${path})`, EXIT.UNSUPPORTED, 'ERR_ADDON_MISSING');
  try {
    cached = createRequire(import.meta.url)(path) as RawAddon;
  } catch (e) {
    throw new AddonError(`addon ${path} failed to load: ${(e as Error).message.split('\n')[0]}`, EXIT.UNSUPPORTED, 'ERR_ADDON_LOAD');
  }
  return cached;
}

/** null when the addon loads, else why not (one line). */
export function addonUnavailable(): string | null {
  try {
    loadAddon();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Runs `f`, turning the addon's thrown errors (which carry `code`) into AddonError. */
export function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof HyperEnclaveError) throw e;
    const err = e as Error & { code?: string };
    const exit = err.code === 'ERR_INVALID_ARG' || err.code === 'ERR_OUT_OF_RANGE' ? EXIT.BAD_INPUT : err.code === 'ERR_MSR' || err.code === 'ERR_NO_KVM' ? EXIT.UNSUPPORTED : EXIT.INTERNAL;
    throw new AddonError(err.message, exit, err.code);
  }
}

// ---------------------------------------------------------------- syscall bridge

export const cpuid = (leaf: number, subleaf = 0): CpuidRegs => wrap(() => loadAddon().cpuid(leaf, subleaf));
export const cpuVendor = (): string => wrap(() => loadAddon().cpuVendor());
/** Reads an MSR through /dev/cpu/N/msr; AddonError (code ERR_MSR) when absent or not permitted. */
export const readMsr = (msr: number, cpu = 0): bigint => wrap(() => loadAddon().readMsr(cpu, msr));
/** HE_IOC_STATUS on an open /dev/hyperenclave (the he_status record's bytes). */
export const heStatus = (fd: number): Buffer => wrap(() => loadAddon().heStatus(fd));
/** null when /dev/kvm can run enclave VMs here, else the reason. */
export function kvmUnavailable(): string | null {
  const why = addonUnavailable();
  return why ?? loadAddon().kvmAvailable();
}

/** A mapping of a device/file (or anonymous memory), read and written at offsets (bounds-checked). */
export class MappedRegion {
  private handle: number | null;
  private constructor(
    handle: number,
    readonly length: number,
  ) {
    this.handle = handle;
  }
  /** Shared mapping of `fd` at `offset`. */
  static open(fd: number, length: number, offset: Int = 0, writable = false): MappedRegion {
    return new MappedRegion(
      wrap(() => loadAddon().mmapOpen(fd, length, offset, writable)),
      length,
    );
  }
  static anonymous(length: number): MappedRegion {
    return new MappedRegion(
      wrap(() => loadAddon().mmapOpen(-1, length, 0, true)),
      length,
    );
  }
  private h(): number {
    if (this.handle === null) throw new AddonError('mapping already closed', EXIT.USAGE, 'ERR_BAD_HANDLE');
    return this.handle;
  }
  read(offset: number, length: number): Buffer {
    return wrap(() => loadAddon().mmapRead(this.h(), offset, length));
  }
  write(offset: number, data: Uint8Array): void {
    wrap(() => loadAddon().mmapWrite(this.h(), offset, data));
  }
  close(): void {
    if (this.handle !== null) loadAddon().munmap(this.handle);
    this.handle = null;
  }
}
