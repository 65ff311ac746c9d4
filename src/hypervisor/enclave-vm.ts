import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXIT, HyperEnclaveError } from '../errors.js';
import { ECALL, PAGE_SIZE } from './abi.js';
import { AddonError, EnclaveVmError, loadAddon, enclavesOutDir, type RawEcall, type RawOcall, type RawVmInfo } from './addon.js';

/**
 * The KVM enclave runner as the addon exposes it: built payloads (hypervisor/enclaves/out), one
 * enclave VM per enclave with a vCPU per TCS, ECALLs with OCALL tables.
 */

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
    if (this.handle === null) throw new EnclaveVmError(`enclave ${this.name}: VM already destroyed`, 'ERR_BAD_HANDLE');
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

  /** ECALL that must succeed: returns the output, throws EnclaveVmError with the enclave's code otherwise. */
  call(fn: number, input?: Uint8Array, opts: EcallOptions = {}): Buffer {
    const r = this.ecall(fn, input, opts);
    if (!r.ok) throw new EnclaveVmError(`enclave ${this.name}: ECALL ${fn} returned error code ${r.errorCode}`, 'ERR_ENCLAVE_STATUS');
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

export function vmCall<T>(f: () => T): T {
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
      throw new EnclaveVmError(err.message, err.code);
    if (err.code === undefined) throw e; // an exception thrown by a JS OCALL handler
    throw new AddonError(err.message, err.code === 'ERR_INVALID_ARG' ? EXIT.BAD_INPUT : EXIT.INTERNAL, err.code);
  }
}
