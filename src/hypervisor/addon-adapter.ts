import { EXIT } from '../errors.js';
import { HypervisorError } from './abi.js';
import { loadAddon } from './addon.js';
import type { CoreConfig, CoreHv, CoreModule, EnclaveVmHandle } from './core-binding.js';
import type { DeviceBridge } from './linux-client.js';

/**
 * The one place that knows the addon's native surface (hypervisor/addon/src/exports.rs):
 * adapts its core bindings (hvCreate, hvHypercall, …), KVM enclave runner (hvEnclaveRun,
 * enclaveEcall) and the typed /dev/hyperenclave bridge to the interfaces this area uses.
 */
interface Native {
  hvCreate(cfg: Record<string, unknown>): number;
  hvClose(h: number): void;
  hvHypercall(h: number, nr: number, args: bigint[], guestBase: bigint, guest: Buffer): { status: number; rdi: bigint; rsi: bigint; rdx: bigint };
  hvHostAccess(h: number, gpa: bigint, access: string): string | null;
  hvEnclavePages(h: number, id: number): { offset: bigint; hpa: bigint; type: number; perms: number }[];
  hvReadPhys(h: number, pa: bigint, length: number): Buffer;
  hvEnclaveRun(h: number, id: number, opts?: { sharedPages?: number; timeoutMs?: number }): number;
  enclaveEcall(vm: number, tcs: bigint, fn: bigint, input: Buffer, opts?: { timeoutMs?: number; ocall?: (nr: number, data: Buffer) => Buffer | null | false }): { status: number; output: Buffer; exits: number };
  enclaveEcallAsync(vm: number, tcs: bigint, fn: bigint, input: Buffer, opts?: { timeoutMs?: number; ocall?: (nr: number, data: Buffer) => Buffer | null }): Promise<{ status: number; output: Buffer; exits: number }>;
  enclaveEdmm(vm: number, op: string, offset: bigint, count: number, arg?: number): number;
  enclaveDestroy(vm: number): void;
  kvmAvailable(): string | null;
  heVersion(fd: number, rec: Buffer): Buffer;
  heLoad(fd: number, rec: Buffer): Buffer;
  heEnable(fd: number): void;
  heDisable(fd: number): void;
  heStatus(fd: number): Buffer;
  heHypercall(fd: number, rec: Buffer, staging: Buffer | null): Buffer;
}

let cached: Native | undefined;

/** The addon as loaded by addon.ts (the one loader), checked for the core bindings this area needs. */
function native(): Native {
  if (cached) return cached;
  const m = loadAddon() as unknown as Partial<Native>;
  if (typeof m.hvCreate !== 'function' || typeof m.hvHypercall !== 'function') throw new HypervisorError('addon has no core bindings (hvCreate/hvHypercall): rebuild it with make build', EXIT.UNSUPPORTED);
  cached = m as Native;
  return cached;
}

class NativeCore implements CoreHv {
  constructor(
    private readonly n: Native,
    private readonly h: number,
  ) {}
  hypercall(nr: number, args: readonly bigint[], guestBase: bigint, guest: Buffer) {
    return this.n.hvHypercall(this.h, nr, [...args], guestBase, guest);
  }
  hostAccess(gpa: bigint, access: 'read' | 'write' | 'execute'): string | null {
    return this.n.hvHostAccess(this.h, gpa, access);
  }
  enclavePages(id: number) {
    return this.n.hvEnclavePages(this.h, id);
  }
  readPhys(pa: bigint, length: number): Buffer {
    return this.n.hvReadPhys(this.h, pa, length);
  }
  kvmUnavailable(): string | null {
    return this.n.kvmAvailable();
  }
  createVm(id: number, opts: { timeoutMs: number }): EnclaveVmHandle {
    let vm: number;
    try {
      vm = this.n.hvEnclaveRun(this.h, id, { timeoutMs: opts.timeoutMs });
    } catch (e) {
      throw new HypervisorError((e as Error).message, EXIT.BAD_INPUT);
    }
    const n = this.n;
    const failed = (e: unknown) => {
      const err = e as Error & { code?: string };
      const dead = err.code === 'ERR_ENCLAVE_DEAD' || err.code === 'ERR_SSA_INVALID';
      if (dead || err.code === 'ERR_ENCLAVE_CALL') return { ok: false as const, error: err.message, dead };
      throw e;
    };
    return {
      ecall(tcs, fn, input, ocall, timeoutMs) {
        try {
          const r = n.enclaveEcall(vm, tcs, BigInt(fn), input, { ...(ocall ? { ocall } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
          return { ok: true as const, status: r.status, output: r.output, exits: r.exits };
        } catch (e) {
          return failed(e);
        }
      },
      async ecallAsync(tcs, fn, input, ocall) {
        try {
          const r = await n.enclaveEcallAsync(vm, tcs, BigInt(fn), input, ocall ? { ocall } : {});
          return { ok: true as const, status: r.status, output: r.output, exits: r.exits };
        } catch (e) {
          return failed(e);
        }
      },
      edmm(op, offset, count, arg) {
        try {
          return n.enclaveEdmm(vm, op, offset, count, arg);
        } catch (e) {
          throw new HypervisorError((e as Error).message, EXIT.BAD_INPUT);
        }
      },
      destroy() {
        try {
          n.enclaveDestroy(vm);
        } catch {
          // already dropped by ENCLAVE_DESTROY
        }
      },
    };
  }
  close(): void {
    this.n.hvClose(this.h);
  }
}

export async function addonCore(): Promise<CoreModule> {
  const n = native();
  return {
    createHypervisor(cfg: CoreConfig): CoreHv {
      const h = n.hvCreate({ ...cfg, keySlots: cfg.keySlots ?? undefined });
      return new NativeCore(n, h);
    },
  };
}

export async function addonDeviceBridge(): Promise<DeviceBridge> {
  const n = native();
  const { openSync, closeSync } = await import('node:fs');
  return {
    open: (path) => openSync(path, 'r+'),
    close: (fd) => closeSync(fd),
    version: (fd, rec) => n.heVersion(fd, rec),
    load: (fd, rec) => n.heLoad(fd, rec),
    enable: (fd) => n.heEnable(fd),
    disable: (fd) => n.heDisable(fd),
    status: (fd) => n.heStatus(fd),
    hypercall: (fd, rec, staging) => n.heHypercall(fd, rec, staging),
  };
}
