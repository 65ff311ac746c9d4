import { existsSync, readFileSync } from 'node:fs';
import type { CoreConfig } from './core-binding.js';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { EXIT, HyperEnclaveError } from '../errors.js';
import { ECALL, HC, HypervisorError, decodeEnclaveInfo, decodeStatus, encodeMemoryMap, encodeSecs, ENCLAVE_INFO_SIZE, PAGE_SIZE, REPORT_SIZE, STATUS_SIZE } from './abi.js';
import type { EnclaveInfoRecord, HvStatusRecord, MemRangeSpec, SecsSpec } from './abi.js';

/**
 * Loader and typed wrapper of the Node-API addon (hypervisor/addon, Rust): the syscall bridge
 * (CPUID, MSRs, typed /dev/hyperenclave calls, mmap), the KVM enclave runner and the bindings to hyperenclave-core.
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
export class EnclaveError extends HyperEnclaveError {
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

interface RawEcall {
  status: number;
  output: Buffer;
  exits: number;
  /** Exceptions delivered to the enclave's handler (AEX) during the ECALL. */
  aex: number;
}

/** An OCALL handler as the addon calls it: a Buffer/Uint8Array is the answer, null/undefined an
 * empty one, `false` fails the OCALL (the enclave gets error code 7), a throw fails it and
 * surfaces the exception. */
type RawOcall = (nr: number, input: Buffer) => Uint8Array | null | undefined | false;

interface RawVmInfo {
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
function wrap<T>(f: () => T): T {
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

// ---------------------------------------------------------------- enclave payloads

export interface EnclaveLayoutPage {
  offset: number;
  type: 'tcs' | 'reg';
  perms: string;
  /** SECINFO.FLAGS (R=1 W=2 X=4, page type in 15:8). */
  secinfo: number;
}

/** hypervisor/enclaves/out/<name>.json, written by hypervisor/enclaves/layout.mjs. */
export interface EnclaveLayout {
  schema: 'hyperenclave-enclave-layout';
  version: 1;
  name: string;
  image: string;
  imageSize: number;
  imageSha256: string;
  base: number;
  size: number;
  ssaFrameSize: number;
  tcsOffset: number;
  /** Every TCS, in thread order (layouts from gen-link.mjs; older ones have only tcsOffset). */
  tcsOffsets?: number[];
  entryOffset: number;
  ssaOffset: number;
  /** ELRANGE offset and size (pages) of the heap reserve heap_grow fills at run time. */
  heapOffset?: number;
  heapPages?: number;
  pages: EnclaveLayoutPage[];
}

/** A built payload: its layout and flat image (ELRANGE offset 0 onward). */
export interface EnclavePayload {
  layout: EnclaveLayout;
  image: Buffer;
}

/** Reads a payload built by hypervisor/enclaves/build.sh (crypto, sealer, misbehave). */
export function loadPayload(name: string, dir = enclavesOutDir()): EnclavePayload {
  const jsonPath = join(dir, `${name}.json`);
  if (!existsSync(jsonPath)) throw new AddonError(`enclave payload ${name} not built: run make build (missing ${jsonPath})`, EXIT.NOT_FOUND, 'ERR_PAYLOAD_MISSING');
  const layout = JSON.parse(readFileSync(jsonPath, 'utf8')) as EnclaveLayout;
  if (layout.schema !== 'hyperenclave-enclave-layout' || layout.version !== 1) throw new AddonError(`${jsonPath}: not an enclave layout (schema ${String(layout.schema)})`, EXIT.BAD_INPUT);
  const image = readFileSync(join(dir, layout.image));
  if (image.length !== layout.imageSize) throw new AddonError(`${layout.image}: ${image.length} bytes, layout says ${layout.imageSize}`, EXIT.BAD_INPUT);
  if (image.length > layout.size) throw new AddonError(`${layout.image}: image of ${image.length} bytes is larger than the declared ELRANGE (${layout.size})`, EXIT.BAD_INPUT);
  return { layout, image };
}

/** The 4 KiB page at `offset` of a payload (zero-filled past the image end). */
export function payloadPage(p: EnclavePayload, offset: number): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  if (offset < p.image.length) p.image.copy(page, 0, offset, Math.min(offset + PAGE_SIZE, p.image.length));
  return page;
}

export interface EcallOutcome {
  /** EAX at EEXIT: output length, or ECALL.ERROR | error code. */
  status: number;
  ok: boolean;
  /** The enclave's error code when !ok. */
  errorCode: number | null;
  output: Buffer;
  /** Exceptions the enclave's own handler took during the ECALL (0 on the fast path). */
  aex?: number;
}

const NO_OUTPUT = Buffer.alloc(0);

/** The OCALL table a caller registers: index → (input) → output (null/undefined: empty). */
export type OcallTable = Readonly<Record<number, (input: Buffer) => Uint8Array | null | undefined>>;

export interface EcallOptions {
  /** Runaway budget for this ECALL (default: the VM's). */
  timeoutMs?: number;
  /** Serves the enclave's OCALLs: (number, input) → output. A throw fails the OCALL. */
  ocall?: (nr: number, input: Buffer) => Uint8Array | null | undefined;
  /** OCALL table (instead of `ocall`): an index with no entry fails with code 7 for the enclave
   * and is logged once per VM as "OCALL <n>: no such entry". */
  ocalls?: OcallTable;
  /** TCS to enter (default: the payload's first). */
  tcsOffset?: number;
}

/** Turns an OCALL table into the addon's handler; unknown indices fail (code 7), logged once. */
export function ocallDispatcher(table: OcallTable, log: (line: string) => void, seen: Set<number> = new Set()): RawOcall {
  return (nr, input) => {
    const f = Object.prototype.hasOwnProperty.call(table, nr) ? table[nr] : undefined;
    if (typeof f !== 'function') {
      if (!seen.has(nr)) {
        seen.add(nr);
        log(`OCALL ${nr}: no such entry`);
      }
      return false;
    }
    return f(input);
  };
}

export type VmInfo = RawVmInfo;

/** One enclave VM on KVM (standalone or over a core enclave's EPC pages). */
export class EnclaveVm {
  private handle: number | null;
  private constructor(
    handle: number,
    readonly name: string,
    readonly tcsOffset: number,
  ) {
    this.handle = handle;
  }

  /** Loads a payload without the core (no measurement; EGETKEY/EREPORT unavailable). */
  static standalone(p: EnclavePayload, opts: { sharedPages?: number; timeoutMs?: number; name?: string } = {}): EnclaveVm {
    const a = loadAddon();
    const h = vmCall(() =>
      a.enclaveLoad({
        name: opts.name ?? p.layout.name,
        base: p.layout.base,
        size: p.layout.size,
        image: p.image,
        pages: p.layout.pages.map((pg) => ({ offset: pg.offset, perms: pg.secinfo & 7, tcs: pg.type === 'tcs' })),
        sharedPages: opts.sharedPages,
        timeoutMs: opts.timeoutMs,
      }),
    );
    return new EnclaveVm(h, opts.name ?? p.layout.name, p.layout.tcsOffset);
  }

  /** @internal */
  static fromHandle(handle: number, name: string, tcsOffset: number): EnclaveVm {
    return new EnclaveVm(handle, name, tcsOffset);
  }

  private h(): number {
    if (this.handle === null) throw new EnclaveError(`enclave ${this.name}: VM already destroyed`, 'ERR_BAD_HANDLE');
    return this.handle;
  }

  /** Where unknown OCALL indices are reported (once each); default: stderr. */
  ocallLog: (line: string) => void = (line) => process.stderr.write(`enclave ${this.name}: ${line}\n`);
  private readonly unknownOcalls = new Set<number>();

  private handler(opts: EcallOptions): RawOcall | undefined {
    if (opts.ocalls !== undefined) return ocallDispatcher(opts.ocalls, this.ocallLog, this.unknownOcalls);
    return opts.ocall;
  }

  /** Every TCS of the enclave, in thread order (each has its own vCPU). */
  tcsOffsets(): number[] {
    return vmCall(() => loadAddon().enclaveTcs(this.h()));
  }

  /**
   * The ECALL on its own thread and vCPU: ECALLs on distinct TCSs (`opts.tcsOffset`) run at the
   * same time; a second one on a TCS already inside an ECALL is refused (TCS_BUSY).
   */
  async ecallAsync(fn: number, input?: Uint8Array, opts: EcallOptions = {}): Promise<EcallOutcome> {
    const a = loadAddon();
    const h = this.h();
    const tcs = opts.tcsOffset ?? this.tcsOffset;
    let r: RawEcall;
    try {
      r = await a.enclaveEcallAsync(h, tcs, fn, input ?? null, { timeoutMs: opts.timeoutMs, ocall: this.handler(opts) });
    } catch (e) {
      return vmCall(() => {
        throw e;
      });
    }
    const ok = (r.status & ECALL.ERROR) === 0;
    return { status: r.status, ok, errorCode: ok ? null : r.status & ~ECALL.ERROR, output: r.output, aex: r.aex };
  }

  /**
   * Host EDMM leaves on the running enclave (core enclaves: through the core, so the EPCM and
   * its checks are the hypervisor's): augment (EAUG, pages PENDING until the enclave EACCEPTs),
   * restrict (EMODPR to `arg` permissions), modifyType (EMODT to `arg` = 4 TRIM), remove
   * (EREMOVE of accepted TRIM pages). Returns the pages affected.
   */
  edmm(op: 'augment' | 'restrict' | 'modifyType' | 'remove', offset: number, count: number, arg?: number): number {
    return vmCall(() => loadAddon().enclaveEdmm(this.h(), op, offset, count, arg));
  }

  ecall(fn: number, input?: Uint8Array, opts: EcallOptions = {}): EcallOutcome {
    const a = loadAddon();
    const h = this.h();
    const tcs = opts.tcsOffset ?? this.tcsOffset;
    let status: number;
    let output: Buffer = NO_OUTPUT;
    let aex = 0;
    if (opts.ocall === undefined && opts.ocalls === undefined && opts.timeoutMs === undefined) {
      // hot path: one N-API call returning a number (plus one for the output, if any)
      status = vmCall(() => a.enclaveEcallFast(h, tcs, fn, input ?? null));
      if (status !== 0 && (status & ECALL.ERROR) === 0) output = a.enclaveLastOutput(h);
    } else {
      const r = vmCall(() => a.enclaveEcall(h, tcs, fn, input ?? null, { timeoutMs: opts.timeoutMs, ocall: this.handler(opts) }));
      status = r.status;
      output = r.output;
      aex = r.aex;
    }
    const ok = (status & ECALL.ERROR) === 0;
    return { status, ok, errorCode: ok ? null : status & ~ECALL.ERROR, output, aex };
  }

  /** ECALL that must succeed: returns the output, throws EnclaveError with the enclave's code otherwise. */
  call(fn: number, input?: Uint8Array, opts: EcallOptions = {}): Buffer {
    const r = this.ecall(fn, input, opts);
    if (!r.ok) throw new EnclaveError(`enclave ${this.name}: ECALL ${fn} returned error code ${r.errorCode}`, 'ERR_ENCLAVE_STATUS');
    return r.output;
  }

  info(): VmInfo {
    return vmCall(() => loadAddon().enclaveInfo(this.h()));
  }

  /** Ends the VM (KVM objects freed; a core enclave's pages stay until ENCLAVE_DESTROY). */
  destroy(): void {
    if (this.handle !== null) loadAddon().enclaveDestroy(this.handle);
    this.handle = null;
  }
}

function vmCall<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof HyperEnclaveError) throw e;
    const err = e as Error & { code?: string };
    if (
      err.code === 'ERR_ENCLAVE_DEAD' ||
      err.code === 'ERR_SSA_INVALID' ||
      err.code === 'ERR_ENCLAVE_EDMM' ||
      err.code === 'ERR_ENCLAVE_CALL' ||
      err.code === 'ERR_ENCLAVE_LOAD' ||
      err.code === 'ERR_NO_KVM' ||
      err.code === 'ERR_BAD_HANDLE'
    )
      throw new EnclaveError(err.message, err.code);
    if (err.code === undefined) throw e; // an exception thrown by a JS OCALL handler
    throw new AddonError(err.message, err.code === 'ERR_INVALID_ARG' ? EXIT.BAD_INPUT : EXIT.INTERNAL, err.code);
  }
}

// ---------------------------------------------------------------- the core

/** The core's configuration: one type, defined with the service's view of the core. */
export type CoreHypervisorConfig = CoreConfig;

export interface HypercallOutcome {
  status: number;
  rdi: bigint;
  rsi: bigint;
  rdx: bigint;
}

const HC_NAME: Record<number, string> = Object.fromEntries(Object.entries(HC).map(([k, v]) => [v, k]));

/**
 * The core's `Hypervisor` living in this process. `hypercall` is hypercall::dispatch with the
 * caller's memory (`guest`, at guest-physical `guestBase`); the typed helpers use a private
 * scratch buffer at `scratchBase` (must be RAM in the ENABLE memory map once enabled).
 */
export class CoreHypervisor {
  private handle: number | null;
  private readonly scratch = Buffer.alloc(4 * PAGE_SIZE);
  private readonly trustScratch = Buffer.alloc(2 * PAGE_SIZE);
  constructor(
    cfg: CoreHypervisorConfig,
    readonly scratchBase: bigint = 0x10_0000n,
  ) {
    this.handle = wrap(() => loadAddon().hvCreate(cfg));
  }

  private h(): number {
    if (this.handle === null) throw new AddonError('hypervisor core already closed', EXIT.USAGE, 'ERR_BAD_HANDLE');
    return this.handle;
  }

  hypercall(nr: number, args: readonly bigint[], guestBase: bigint, guest: Buffer): HypercallOutcome {
    return wrap(() => loadAddon().hvHypercall(this.h(), nr, [...args], guestBase, guest));
  }

  hostAccess(gpa: bigint, access: 'read' | 'write' | 'execute'): string | null {
    return wrap(() => loadAddon().hvHostAccess(this.h(), gpa, access));
  }

  enclavePages(id: number): { offset: bigint; hpa: bigint; type: number; perms: number }[] {
    return wrap(() => loadAddon().hvEnclavePages(this.h(), id));
  }

  readPhys(pa: bigint, length: number): Buffer {
    return wrap(() => loadAddon().hvReadPhys(this.h(), pa, length));
  }

  close(): void {
    if (this.handle !== null) loadAddon().hvClose(this.handle);
    this.handle = null;
  }

  /** A hypercall through the scratch buffer (inputs placed at the given offsets); throws on non-SUCCESS. */
  private call(nr: number, args: bigint[], inputs: [number, Uint8Array][] = []): HypercallOutcome {
    for (const [off, data] of inputs) this.scratch.set(data, off);
    const r = this.hypercall(nr, args, this.scratchBase, this.scratch);
    if (r.status !== 0) throw HypervisorError.fromStatus(HC_NAME[nr] ?? `hypercall ${nr}`, r.status);
    return r;
  }
  private at = (off: number): bigint => this.scratchBase + BigInt(off);

  status(): HvStatusRecord {
    this.call(HC.STATUS, [this.at(0), BigInt(STATUS_SIZE)]);
    return decodeStatus(Buffer.from(this.scratch.subarray(0, STATUS_SIZE)));
  }

  /** ENABLE: builds the host demotion tables from the memory map (the host is then "demoted"). */
  enable(map: readonly MemRangeSpec[]): void {
    const raw = encodeMemoryMap(map);
    if (raw.length > this.scratch.length) throw new AddonError(`ENABLE: memory map of ${map.length} entries does not fit the scratch buffer`, EXIT.BAD_INPUT);
    this.call(HC.ENABLE, [this.at(0), BigInt(map.length)], [[0, raw]]);
  }

  disable(): void {
    this.call(HC.DISABLE, []);
  }

  /** EENTER bookkeeping only (the runner does this itself around each ECALL). */
  enter(id: number, tcsOffset: number): { entry: bigint; tcs: bigint; ssa: bigint } {
    const r = this.call(HC.ENCLAVE_ENTER, [BigInt(id), BigInt(tcsOffset)]);
    return { entry: r.rdi, tcs: r.rsi, ssa: r.rdx };
  }

  exit(id: number, tcsOffset: number): void {
    this.call(HC.ENCLAVE_EXIT, [BigInt(id), BigInt(tcsOffset)]);
  }

  /** Lowest free ASID/KeyID, optionally bound to enclave `owner`. */
  keySlotAlloc(owner?: number): number {
    return Number(this.call(HC.KEYSLOT_ALLOC, [BigInt(owner ?? 0)]).rdi);
  }

  keySlotBind(slot: number, id: number): void {
    this.call(HC.KEYSLOT_BIND, [BigInt(slot), BigInt(id)]);
  }

  keySlotRelease(slot: number): void {
    this.call(HC.KEYSLOT_RELEASE, [BigInt(slot)]);
  }

  /** Records the cache flush released slots need; returns how many became reusable. */
  keySlotFlush(): number {
    return Number(this.call(HC.KEYSLOT_FLUSH, []).rdi);
  }

  createEnclave(secs: SecsSpec): number {
    return Number(this.call(HC.ENCLAVE_CREATE, [this.at(0)], [[0, encodeSecs(secs)]]).rdi);
  }

  addPage(id: number, offset: number, page: Uint8Array, secinfo: number): void {
    this.call(HC.ENCLAVE_ADD, [BigInt(id), BigInt(offset), this.at(0), BigInt(secinfo)], [[0, page]]);
  }

  extend(id: number, offset: number): void {
    this.call(HC.ENCLAVE_EXTEND, [BigInt(id), BigInt(offset)]);
  }

  init(id: number, sigstruct: Uint8Array): void {
    this.call(HC.ENCLAVE_INIT, [BigInt(id), this.at(0)], [[0, sigstruct]]);
  }

  /** Returns the EPC pages given back. Any VM running the enclave is ended first. */
  destroy(id: number): number {
    return Number(this.call(HC.ENCLAVE_DESTROY, [BigInt(id)]).rdi);
  }

  info(id: number): EnclaveInfoRecord {
    this.call(HC.ENCLAVE_INFO, [BigInt(id), this.at(0), BigInt(ENCLAVE_INFO_SIZE)]);
    return decodeEnclaveInfo(Buffer.from(this.scratch.subarray(0, ENCLAVE_INFO_SIZE)));
  }

  /** VERIFY_REPORT: true when the REPORT's MAC is right for `targetMrenclave`. */
  verifyReport(report: Uint8Array, targetMrenclave: Uint8Array): boolean {
    this.scratch.set(report, 0);
    this.scratch.set(targetMrenclave, 1024);
    const r = this.hypercall(HC.VERIFY_REPORT, [this.at(0), this.at(1024)], this.scratchBase, this.scratch);
    return r.status === 0;
  }

  /**
   * TRUST_INIT over the TPM given at creation (`tpm`): unseals `blob` or creates and seals a new
   * root. Returns the flags, the new blob (when created) and the HAK PCR.
   */
  trustInit(blob?: Uint8Array): { created: boolean; pcrExtended: boolean; blob?: Buffer; hakPcr: number } {
    const s = this.trustScratch;
    s.fill(0);
    if (blob) s.set(blob, 0);
    const base = this.scratchBase + 0x10_0000n;
    const r = this.hypercall(HC.TRUST_INIT, [blob ? base : 0n, BigInt(blob?.length ?? 0), base + BigInt(PAGE_SIZE), BigInt(PAGE_SIZE)], base, s);
    if (r.status !== 0) throw HypervisorError.fromStatus('TRUST_INIT', r.status);
    const n = Number(r.rdi);
    return {
      created: (Number(r.rsi) & 1) !== 0,
      pcrExtended: (Number(r.rsi) & 2) !== 0,
      ...(n > 0 ? { blob: Buffer.from(s.subarray(PAGE_SIZE, PAGE_SIZE + n)) } : {}),
      hakPcr: Number(r.rdx),
    };
  }

  /** HAK_PUBLIC: the hypervisor attestation key (Ed25519) and its PCR. */
  hakPublic(): { key: Buffer; pcr: number } {
    const r = this.call(HC.HAK_PUBLIC, [this.at(0)]);
    return { key: Buffer.from(this.scratch.subarray(0, 32)), pcr: Number(r.rdi) };
  }

  /** QUOTE: a REPORT for the quoting identity → the 496-byte HAK-signed quote. */
  quote(report: Uint8Array): Buffer {
    this.call(HC.QUOTE, [this.at(0), this.at(1024)], [[0, report]]);
    return Buffer.from(this.scratch.subarray(1024, 1024 + 496));
  }

  /** A raw host hypercall's status (to show what the core refuses the host, e.g. REPORT). */
  rawStatus(nr: number, args: bigint[]): number {
    return this.hypercall(nr, args, this.scratchBase, this.scratch).status;
  }

  /**
   * ECREATE + EADD/EEXTEND of every page of a built payload + EINIT with `sigstruct` (built
   * by `payloadSigstruct`). Returns the enclave id.
   */
  loadPayload(p: EnclavePayload, sigstruct: Uint8Array, opts: { attributes?: bigint; xfrm?: bigint } = {}): number {
    const l = p.layout;
    const id = this.createEnclave({ size: BigInt(l.size), base: BigInt(l.base), ssaFrameSize: l.ssaFrameSize, attributes: opts.attributes ?? 4n, xfrm: opts.xfrm ?? 3n });
    try {
      // EADD + EEXTEND of every page in one addon call (same core calls as the hypercalls)
      const a = loadAddon();
      const h = this.h();
      try {
        a.hvAddPages(h, id, p.image, l.pages.map((pg) => ({ offset: pg.offset, secinfo: pg.secinfo })), true);
      } catch (e) {
        const err = e as Error & { code?: string };
        const status = /^HC_STATUS_(\d+)$/.exec(err.code ?? '');
        if (status) throw HypervisorError.fromStatus('ENCLAVE_ADD', Number(status[1]), err.message);
        throw new AddonError(err.message, EXIT.INTERNAL, err.code);
      }
      this.init(id, sigstruct);
    } catch (e) {
      this.destroy(id);
      throw e;
    }
    return id;
  }

  /** Starts a KVM VM over the EPC pages of initialized enclave `id`. */
  run(id: number, opts: { sharedPages?: number; timeoutMs?: number; tcsOffset?: number } = {}): EnclaveVm {
    const h = vmCall(() => loadAddon().hvEnclaveRun(this.h(), id, { sharedPages: opts.sharedPages, timeoutMs: opts.timeoutMs }));
    return EnclaveVm.fromHandle(h, String(id), opts.tcsOffset ?? 0);
  }
}

/** What ./core-binding.ts calls. */
export function createHypervisor(cfg: CoreHypervisorConfig): CoreHypervisor {
  return new CoreHypervisor(cfg);
}

export interface SigstructFields {
  enclaveHash: Uint8Array;
  attributes?: bigint;
  xfrm?: bigint;
  attributeMask?: bigint;
  xfrmMask?: bigint;
  miscSelect?: number;
  miscMask?: number;
  isvProdId?: number;
  isvSvn?: number;
  vendor?: number;
  date?: number;
}

/**
 * A SIGSTRUCT (the core's layout code), signed with `signer` (RSA-3072, e = 3, PKCS#1 v1.5
 * SHA-256, as SGX requires) or left unsigned (for a core with requireSignedSigstruct false).
 */
export function buildSigstruct(fields: SigstructFields, signer?: KeyObject): Buffer {
  const a = loadAddon();
  const raw = wrap(() => a.sigstructBuild(fields));
  if (!signer) return raw;
  const { modulus, exponent } = rsaPublicNumbers(signer);
  if (exponent !== 3n) throw new AddonError(`SIGSTRUCT signer: public exponent ${exponent}, SGX needs 3`, EXIT.BAD_INPUT);
  if (modulus.length !== 384) throw new AddonError(`SIGSTRUCT signer: modulus is ${modulus.length * 8} bits, need 3072`, EXIT.BAD_INPUT);
  const message = wrap(() => a.sigstructSignedMessage(raw));
  const signature = sign('sha256', message, signer);
  return wrap(() => a.sigstructAttach(raw, modulus, signature));
}

/**
 * A fresh RSA-3072 (e = 3) SIGSTRUCT signing key. Made through PEM on purpose: exporting a
 * KeyObject straight from generateKeyPairSync can deadlock Node 20 when a GC runs during the
 * export (the key-generation job's destructor takes the key's mutex the export holds).
 */
export function newSigstructSigner(): KeyObject {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 3072,
    publicExponent: 3,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return createPrivateKey(privateKey);
}

/** n (big-endian, no leading zero) and e of an RSA key, from its PKCS#1 RSAPublicKey DER. */
function rsaPublicNumbers(key: KeyObject): { modulus: Buffer; exponent: bigint } {
  if (key.asymmetricKeyType !== 'rsa') throw new AddonError(`SIGSTRUCT signer: ${String(key.asymmetricKeyType)} key, need RSA`, EXIT.BAD_INPUT);
  const der = createPublicKey(key).export({ type: 'pkcs1', format: 'der' });
  let at = 0;
  const header = (tag: number, what: string): number => {
    if (der[at] !== tag) throw new AddonError(`RSAPublicKey DER: expected tag ${tag} for ${what} at byte ${at}`, EXIT.BAD_INPUT);
    let len = der[at + 1]!;
    at += 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[at++]!;
    }
    return len;
  };
  header(0x30, 'SEQUENCE');
  let len = header(0x02, 'modulus');
  let modulus = der.subarray(at, at + len);
  at += len;
  while (modulus.length > 0 && modulus[0] === 0) modulus = modulus.subarray(1);
  len = header(0x02, 'exponent');
  const exponent = BigInt('0x' + (der.subarray(at, at + len).toString('hex') || '0'));
  return { modulus: Buffer.from(modulus), exponent };
}
