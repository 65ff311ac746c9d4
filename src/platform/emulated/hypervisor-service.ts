import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../../errors.js';
import {
  type BackendKind,
  type EncryptedGuest,
  type KeySlotAllocator,
  type KeySlotKind,
  type MemoryEncryptionBackend,
  BACKEND_KINDS,
  createBackend,
  emulatedPlatformFacts,
} from '../../enclave/backends/index.js';
import {
  ABI_VERSION,
  ENCLAVE_INFO_SIZE,
  HAK_PUBLIC_SIZE,
  HC,
  HypervisorError,
  KEYREQUEST_SIZE,
  type MemRangeSpec,
  PAGE_SIZE,
  QUOTE_SIZE,
  REPORT_SIZE,
  SECS_SIZE,
  SIGSTRUCT_SIZE,
  STATUS_SIZE,
  TARGETINFO_SIZE,
  TRUST_BLOB_CAPACITY,
  TRUST_FLAG_CREATED,
  TRUST_FLAG_PCR_EXTENDED,
  decodeEnclaveInfo,
  decodeMemoryMap,
  decodeStatus,
  encodeMemoryMap,
  statusName,
} from '../../hypervisor/abi.js';
import { enclaveSummary, type HostAccessKind } from '../../hypervisor/client.js';
import type { CoreHv, CoreModule, EnclaveVmHandle } from '../../hypervisor/core-binding.js';
import { OcallBridge } from './ocall-bridge.js';
import { writeFileAtomic } from '../state.js';
import { readFileBounded } from '../bounded-read.js';
import { serveRpc } from './rpc.js';
import { alive, canConnect, ensureDaemon } from './daemon.js';
import { emulatedTpmSockets, ensureEmulatedTpm } from './tpm-daemon.js';

/**
 * The emulated platform's hypervisor: one long-lived process per state directory holding the
 * Rust core (through the addon) and serving the driver ABI over newline-JSON RPC on a Unix
 * socket. Requests become real hypercalls (`hypercall::dispatch`) whose buffers sit in a
 * scratch area of host RAM, so after ENABLE they pass the host's nested tables as on hardware.
 */

/**
 * 64 MiB hypervisor (8 MiB image + page-table pool) and 16 MiB EPC: the addon's core is built
 * with the default EPCM capacity of 4096 pages, so EPC beyond 16 MiB would be reserved but unused.
 */
export const RESERVED_DEFAULT = { hypervisor: 64n << 20n, epc: 16n << 20n, image: 8n << 20n } as const;
/** Host-RAM scratch the service stages hypercall buffers in (inside RAM of every map used here). */
export const SCRATCH_BASE = 0x20_0000n;
const SCRATCH_SIZE = 64 * 1024;

/** Synthetic PC memory map: low RAM, legacy hole, RAM to 2 GiB, IOAPIC/LAPIC MMIO, RAM 4..8 GiB. */
export const SYNTHETIC_MEMORY_MAP: readonly MemRangeSpec[] = [
  { start: 0x0n, size: 0x9fc00n, kind: 'ram' },
  { start: 0x9fc00n, size: 0x60400n, kind: 'reserved' },
  { start: 0x100000n, size: 0x7ff00000n, kind: 'ram' },
  { start: 0xfec00000n, size: 0x1400000n, kind: 'mmio' },
  { start: 0x100000000n, size: 0x100000000n, kind: 'ram' },
];

/** /sys/firmware/memmap as ranges (RAM, reserved/ACPI/firmware, the rest treated as reserved). */
export function readMachineMemoryMap(dir = '/sys/firmware/memmap'): MemRangeSpec[] | undefined {
  if (!existsSync(dir)) return undefined;
  const out: MemRangeSpec[] = [];
  for (const e of readdirSync(dir)) {
    try {
      const start = BigInt(readFileSync(join(dir, e, 'start'), 'utf8').trim());
      const end = BigInt(readFileSync(join(dir, e, 'end'), 'utf8').trim());
      const type = readFileSync(join(dir, e, 'type'), 'utf8').trim();
      if (end < start) continue;
      out.push({ start, size: end - start + 1n, kind: type === 'System RAM' ? 'ram' : 'reserved' });
    } catch {
      return undefined;
    }
  }
  out.sort((a, b) => (a.start < b.start ? -1 : 1));
  return out.length ? out : undefined;
}

/** The reserved region: the top of the highest RAM range, 2 MiB aligned (as a memmap= planner would). */
export function placeReservedRegion(map: readonly MemRangeSpec[], total: bigint): { base: bigint; memmap: string } {
  const align = 2n << 20n;
  const ram = map.filter((r) => r.kind === 'ram').sort((a, b) => (a.start > b.start ? -1 : 1));
  for (const r of ram) {
    const base = ((r.start + r.size - total) / align) * align;
    if (base >= r.start && base > SCRATCH_BASE + BigInt(SCRATCH_SIZE)) return { base, memmap: `memmap=${total >> 20n}M$0x${base.toString(16)}` };
  }
  throw new HypervisorError(`no RAM range of the memory map holds a ${total >> 20n} MiB reservation`, EXIT.UNSUPPORTED);
}

const hexArg = (args: Record<string, unknown>, k: string, size?: number): Buffer => {
  const v = args[k];
  if (typeof v !== 'string' || !/^([0-9a-f]{2})*$/i.test(v)) throw new HypervisorError(`request field "${k}": expected hex bytes`, EXIT.BAD_INPUT);
  const b = Buffer.from(v, 'hex');
  if (size !== undefined && b.length !== size) throw new HypervisorError(`request field "${k}": ${b.length} bytes, need ${size}`, EXIT.BAD_INPUT);
  return b;
};
const intArg = (args: Record<string, unknown>, k: string): number => {
  const v = args[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new HypervisorError(`request field "${k}": expected a non-negative integer`, EXIT.BAD_INPUT);
  return v;
};
const bigArg = (args: Record<string, unknown>, k: string): bigint => {
  const v = args[k];
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^(0x[0-9a-f]+|[0-9]+)$/i.test(v)) return BigInt(v);
  throw new HypervisorError(`request field "${k}": expected an unsigned integer (number or "0x…" string)`, EXIT.BAD_INPUT);
};

interface EnclaveMeta {
  name: string;
  backend: BackendKind;
  guest: EncryptedGuest | undefined;
  launch: unknown;
  vm: EnclaveVmHandle | undefined;
  /** Why the enclave VM died (fault, runaway); it is not entered again. */
  dead: string | undefined;
}

/** Requests after which the service records what it holds (held.json). */
const MUTATING_OPS = new Set(['load', 'enable', 'disable', 'enclave.create', 'enclave.init', 'enclave.destroy', 'enclave.launch', 'enclave.run']);

/** Runaway budget per ECALL. */
const ECALL_TIMEOUT_MS = 2000;
/** The largest budget a request may ask for (EcallRequest.timeoutMs). */
const MAX_ECALL_TIMEOUT_MS = 600_000;

/**
 * Key slots drawn from the core's table (KEYSLOT_ALLOC/RELEASE/FLUSH), for the backend models.
 * The core hands out the lowest free slot of its one table (1..15 here); each backend kind has
 * its hardware range inside it (SEV-ES ASIDs 1..5, SEV 6..15, CSV 1..15, MKTME KeyIDs 1..15).
 * Slots below the range are taken and given back at once (never used, so the flush is a no-op).
 */
export const EMULATED_SLOT_RANGES: Record<KeySlotKind, { first: number; last: number }> = {
  'sev-es': { first: 1, last: 5 },
  sev: { first: 6, last: 15 },
  csv: { first: 1, last: 15 },
  mktme: { first: 1, last: 15 },
};

class CoreSlotAllocator implements KeySlotAllocator {
  owner = 0;
  constructor(private readonly svc: HypervisorService) {}
  allocate(kind: KeySlotKind): number {
    const r = EMULATED_SLOT_RANGES[kind];
    const skipped: number[] = [];
    try {
      for (;;) {
        let slot: number;
        try {
          slot = Number(this.svc.call('KEYSLOT_ALLOC', [BigInt(this.owner)]).rdi);
        } catch (e) {
          throw new HypervisorError(`no free ${kind} key slot in ${r.first}..${r.last}: ${(e as Error).message}`, EXIT.BAD_INPUT);
        }
        if (slot >= r.first && slot <= r.last) return slot;
        skipped.push(slot);
        if (slot > r.last) throw new HypervisorError(`no free ${kind} key slot in ${r.first}..${r.last} (the core gave ${slot})`, EXIT.BAD_INPUT);
      }
    } finally {
      if (skipped.length) {
        for (const s of skipped) this.svc.call('KEYSLOT_RELEASE', [BigInt(s)]);
        this.svc.call('KEYSLOT_FLUSH', []);
      }
    }
  }
  release(slot: number): void {
    this.svc.call('KEYSLOT_RELEASE', [BigInt(slot)]);
  }
  flush(_slot: number): void {
    this.svc.call('KEYSLOT_FLUSH', []);
  }
}

/** What a service process holds, recorded for its successor (emulated/hypervisor/held.json). */
interface HeldState {
  pid: number;
  startedAt: string;
  image: string | null;
  enabled: boolean;
  enclaves: number[];
}

/** State an earlier service process held and that died with it. */
export interface LostState {
  previousPid: number;
  previousStartedAt: string;
  restartedAt: string;
  image: string | null;
  enabled: boolean;
  enclaves: number[];
}

export interface ServiceOptions {
  stateDir: string;
  /** The Rust core through the addon; resolved at `load` (the service runs before, for status). */
  core: () => Promise<CoreModule>;
  memoryMap?: 'machine' | 'synthetic';
  /** EPC size in MiB (default 16). */
  epcMiB?: number;
}

/** The request handler: the core, the loaded image, backends and per-enclave metadata. */
export class HypervisorService {
  private core: CoreHv | undefined;
  private image: Record<string, unknown> | null = null;
  private map: MemRangeSpec[];
  private memmap: string;
  private reservedBase: bigint;
  private readonly epcBytes: bigint;
  private loading = false;
  private readonly scratch = Buffer.alloc(SCRATCH_SIZE);
  private readonly enclaves = new Map<number, EnclaveMeta>();
  private readonly backends = new Map<BackendKind, MemoryEncryptionBackend>();
  private readonly allocator = new CoreSlotAllocator(this);
  /** OCALLs forwarded to the client that asked for them (ocall-bridge.ts). */
  private readonly ocalls = new OcallBridge();
  readonly startedAt = new Date().toISOString();

  constructor(private readonly opts: ServiceOptions) {
    const machine = opts.memoryMap === 'synthetic' ? undefined : readMachineMemoryMap();
    this.map = machine ?? [...SYNTHETIC_MEMORY_MAP];
    this.epcBytes = BigInt(opts.epcMiB ?? Number(RESERVED_DEFAULT.epc >> 20n)) << 20n;
    const placed = placeReservedRegion(this.map, RESERVED_DEFAULT.hypervisor + this.epcBytes);
    this.reservedBase = placed.base;
    this.memmap = placed.memmap;
  }

  /** What an earlier service process of this state directory held when it ended (see detectLoss). */
  lost: LostState | null = null;
  /** Where this process records what it holds, for the next process to report a loss. */
  recordPath: string | undefined;

  /**
   * Reads what the previous service process recorded; if it held an image or enclaves and is
   * gone, that state is lost (a crash, a kill, a reboot) and this service says so until the
   * next load.
   */
  detectLoss(recordPath: string): void {
    this.recordPath = recordPath;
    let prev: HeldState | undefined;
    try {
      prev = JSON.parse(readFileSync(recordPath, 'utf8')) as HeldState;
    } catch {
      prev = undefined;
    }
    if (prev && prev.pid !== process.pid && !alive(prev.pid) && (prev.image || prev.enclaves?.length))
      this.lost = { previousPid: prev.pid, previousStartedAt: prev.startedAt, restartedAt: this.startedAt, image: prev.image ?? null, enabled: !!prev.enabled, enclaves: prev.enclaves ?? [] };
    this.persist();
  }

  /** Records what this process holds (after every state change). */
  persist(): void {
    if (!this.recordPath) return;
    const held: HeldState = {
      pid: process.pid,
      startedAt: this.startedAt,
      image: (this.image?.id as string | undefined) ?? null,
      enabled: this.core ? this.statusRecord().enabled : false,
      enclaves: [...this.enclaves.keys()],
    };
    try {
      writeFileAtomic(this.recordPath, JSON.stringify(held) + '\n', 0o600);
    } catch {
      // Best effort: the record only improves the message after a crash.
    }
  }

  /** The one-line account of a loss, naming the command that fixes it. */
  lossMessage(): string | undefined {
    const l = this.lost;
    if (!l) return undefined;
    const what = [l.image ? `the loaded image ${l.image.slice(0, 16)}…${l.enabled ? ' (enabled)' : ''}` : '', l.enclaves.length ? `enclave${l.enclaves.length > 1 ? 's' : ''} ${l.enclaves.join(', ')}` : '']
      .filter(Boolean)
      .join(' and ');
    return `the hypervisor service restarted at ${l.restartedAt} (pid ${l.previousPid}, started ${l.previousStartedAt}, had ended); ${what} ${l.enclaves.length + (l.image ? 1 : 0) > 1 ? 'were' : 'was'} lost: run \`hyperenclave boot\` to measure, load and enable the hypervisor again`;
  }

  private need(): CoreHv {
    if (!this.core) {
      throw new HypervisorError(
        this.lossMessage() ?? 'no hypervisor image loaded: run `hyperenclave boot` (or `hyperenclave enable --image FILE`) first',
        EXIT.NOT_FOUND,
      );
    }
    return this.core;
  }

  /** One hypercall through the core with the scratch area as the caller's memory; throws on non-SUCCESS. */
  call(name: keyof typeof HC, args: readonly bigint[], detail?: string) {
    const r = this.need().hypercall(HC[name], args, SCRATCH_BASE, this.scratch);
    if (r.status !== 0) throw HypervisorError.fromStatus(name, r.status, detail);
    return r;
  }

  /** Places buffers in the scratch area; returns their guest-physical addresses. */
  private stage(...bufs: (Buffer | number)[]): bigint[] {
    let at = 0;
    const out: bigint[] = [];
    for (const b of bufs) {
      const len = typeof b === 'number' ? b : b.length;
      if (at + len > SCRATCH_SIZE) throw new HypervisorError('request buffers larger than the staging area', EXIT.BAD_INPUT);
      if (typeof b === 'number') this.scratch.fill(0, at, at + len);
      else b.copy(this.scratch, at);
      out.push(SCRATCH_BASE + BigInt(at));
      at += (len + 63) & ~63;
    }
    return out;
  }
  private out(gpa: bigint, len: number): Buffer {
    const at = Number(gpa - SCRATCH_BASE);
    return Buffer.from(this.scratch.subarray(at, at + len));
  }

  private hakPublic(): { key: string; pcr: number } {
    const [buf] = this.stage(HAK_PUBLIC_SIZE);
    const r = this.call('HAK_PUBLIC', [buf!]);
    return { key: this.out(buf!, HAK_PUBLIC_SIZE).toString('hex'), pcr: Number(r.rdi) };
  }

  private statusRecord() {
    const [buf] = this.stage(STATUS_SIZE);
    this.call('STATUS', [buf!, BigInt(STATUS_SIZE)]);
    return decodeStatus(this.out(buf!, STATUS_SIZE));
  }

  private enclaveInfo(id: number) {
    const [buf] = this.stage(ENCLAVE_INFO_SIZE);
    this.call('ENCLAVE_INFO', [BigInt(id), buf!, BigInt(ENCLAVE_INFO_SIZE)], `enclave ${id}`);
    return decodeEnclaveInfo(this.out(buf!, ENCLAVE_INFO_SIZE));
  }

  private backend(kind: BackendKind): MemoryEncryptionBackend {
    let b = this.backends.get(kind);
    if (!b) {
      const ctx = { facts: emulatedPlatformFacts(), allocator: this.allocator };
      // One key-slot table (the core's, 1..15) serves every backend model; MKTME with 4 KeyID bits.
      b = createBackend(kind, ctx, {
        mktme: { tmeCapability: 1n | (4n << 32n) | (15n << 36n), tmeActivate: 1n | 2n | (4n << 32n) | (1n << 48n), physAddrBits: 46 },
      });
      this.backends.set(kind, b);
    }
    return b;
  }

  /** The enclave's plaintext memory (ELRANGE-sized) from its EPC pages. */
  private enclavePlaintext(id: number, size: bigint): Buffer {
    const mem = Buffer.alloc(Number(size));
    for (const p of this.need().enclavePages(id)) this.need().readPhys(p.hpa, PAGE_SIZE).copy(mem, Number(p.offset));
    return mem;
  }

  private summaries() {
    if (!this.core) return [];
    return [...this.enclaves.entries()].map(([id, m]) => enclaveSummary(id, m.name, this.enclaveInfo(id), m.backend, m.guest && m.guest.kind !== 'none' ? m.guest.slot : null));
  }

  async handle(op: string, a: Record<string, unknown>): Promise<unknown> {
    if (!MUTATING_OPS.has(op)) return this.handleOp(op, a);
    try {
      return await this.handleOp(op, a);
    } finally {
      this.persist();
    }
  }

  private async handleOp(op: string, a: Record<string, unknown>): Promise<unknown> {
    switch (op) {
      case 'version': {
        const r = this.core ? this.call('VERSION', [BigInt(a.abi === undefined ? 0 : intArg(a, 'abi'))]) : { rdi: BigInt(ABI_VERSION) };
        return Number(r.rdi);
      }
      case 'status': {
        const hv = this.core ? this.statusRecord() : null;
        return {
          platform: 'emulated',
          loaded: !!this.core,
          image: this.image,
          enabled: hv?.enabled ?? false,
          cpus: availableParallelism(),
          memmap: this.memmap,
          hv: hv ? jsonable(hv) : null,
          enclaves: this.summaries(),
          process: { pid: process.pid, startedAt: this.startedAt, stateDir: this.opts.stateDir },
          ...(this.lost ? { lost: { ...this.lost, message: this.lossMessage() } } : {}),
        };
      }
      case 'load':
        return this.load(a);
      case 'enable': {
        const map = a.map === undefined ? this.map : decodeMemoryMap(hexArg(a, 'map'));
        const raw = encodeMemoryMap(map);
        const [buf] = this.stage(raw);
        this.call('ENABLE', [buf!, BigInt(map.length)]);
        return null;
      }
      case 'disable':
        this.call('DISABLE', []);
        return null;
      case 'imageDigest': {
        const [buf] = this.stage(32);
        this.call('IMAGE_DIGEST', [buf!]);
        return this.out(buf!, 32).toString('hex');
      }
      case 'enclave.create': {
        const [secs] = this.stage(hexArg(a, 'secs', SECS_SIZE));
        const id = Number(this.call('ENCLAVE_CREATE', [secs!]).rdi);
        this.enclaves.set(id, { name: typeof a.name === 'string' ? a.name : `enclave-${id}`, backend: 'none', guest: undefined, launch: null, vm: undefined, dead: undefined });
        return id;
      }
      case 'enclave.add': {
        const id = intArg(a, 'id');
        const pages = Array.isArray(a.pages) ? (a.pages as Record<string, unknown>[]) : [a];
        for (const p of pages) {
          const off = bigArg(p, 'offset');
          const [page] = this.stage(hexArg(p, 'page', PAGE_SIZE));
          this.call('ENCLAVE_ADD', [BigInt(id), off, page!, BigInt(intArg(p, 'flags'))], `enclave ${id} offset 0x${off.toString(16)}`);
          if (p.measure === true) for (let c = 0n; c < 4096n; c += 256n) this.call('ENCLAVE_EXTEND', [BigInt(id), off + c], `enclave ${id} offset 0x${(off + c).toString(16)}`);
        }
        return null;
      }
      case 'enclave.extend': {
        const id = intArg(a, 'id');
        const off = bigArg(a, 'offset');
        this.call('ENCLAVE_EXTEND', [BigInt(id), off], `enclave ${id} offset 0x${off.toString(16)}`);
        return null;
      }
      case 'enclave.init': {
        const id = intArg(a, 'id');
        const [ss] = this.stage(hexArg(a, 'sigstruct', SIGSTRUCT_SIZE));
        this.call('ENCLAVE_INIT', [BigInt(id), ss!], `enclave ${id}`);
        return null;
      }
      case 'enclave.enter': {
        const id = intArg(a, 'id');
        const r = this.call('ENCLAVE_ENTER', [BigInt(id), bigArg(a, 'tcs')], `enclave ${id}`);
        return { entry: '0x' + r.rdi.toString(16), tcs: '0x' + r.rsi.toString(16), ssa: '0x' + r.rdx.toString(16) };
      }
      case 'enclave.exit': {
        const id = intArg(a, 'id');
        this.call('ENCLAVE_EXIT', [BigInt(id), bigArg(a, 'tcs')], `enclave ${id}`);
        return null;
      }
      case 'enclave.destroy': {
        const id = intArg(a, 'id');
        const meta = this.enclaves.get(id);
        // Release the backend guest first (its key slot goes back to the core), then EREMOVE all.
        meta?.vm?.destroy();
        if (meta?.guest && meta.guest.state !== 'released') meta.guest.release();
        const pages = Number(this.call('ENCLAVE_DESTROY', [BigInt(id)], `enclave ${id}`).rdi);
        this.enclaves.delete(id);
        let flushed = 0;
        if (meta?.guest && meta.backend !== 'none') flushed = this.backend(meta.backend).flushReleased().length;
        return { epcPages: pages, keySlotsFlushed: flushed };
      }
      case 'enclave.info':
        return jsonable(this.enclaveInfo(intArg(a, 'id')));
      case 'enclave.list':
        if (this.lost && !this.core) this.need(); // enclaves were lost: say so rather than "none"
        return this.summaries();
      // REPORT and GET_KEY go to the core as the host's hypercalls: it refuses them (ENCLAVE_ONLY);
      // enclaves get them from inside through the KVM runner. Kept so the refusal is testable.
      case 'report': {
        const id = intArg(a, 'id');
        const [ti, data, out] = this.stage(hexArg(a, 'targetinfo', TARGETINFO_SIZE), hexArg(a, 'reportData', 64), REPORT_SIZE);
        this.call('REPORT', [BigInt(id), ti!, data!, out!], `enclave ${id}`);
        return this.out(out!, REPORT_SIZE).toString('hex');
      }
      case 'getKey': {
        const id = intArg(a, 'id');
        const [req, out] = this.stage(hexArg(a, 'keyRequest', KEYREQUEST_SIZE), 16);
        this.call('GET_KEY', [BigInt(id), req!, out!], `enclave ${id}`);
        return this.out(out!, 16).toString('hex');
      }
      case 'verifyReport': {
        const [rep, target] = this.stage(hexArg(a, 'report', REPORT_SIZE), hexArg(a, 'mrenclave', 32));
        const r = this.need().hypercall(HC.VERIFY_REPORT, [rep!, target!], SCRATCH_BASE, this.scratch);
        if (r.status === 0) return true;
        if (statusName(r.status) === 'REPORT_MAC_MISMATCH') return false;
        throw HypervisorError.fromStatus('VERIFY_REPORT', r.status);
      }
      case 'trustInit': {
        // The core unseals/creates its root over swtpm itself (locality 2); Node only moves the blob.
        this.need();
        const info = await ensureEmulatedTpm(this.opts.stateDir);
        const want = emulatedTpmSockets(this.opts.stateDir);
        if (info.serverPath !== want.server || info.ctrlPath !== want.ctrl)
          throw new HypervisorError(`trustInit: the emulated TPM listens on ${info.serverPath}, the core was given ${want.server}`, EXIT.INTERNAL);
        const blob = a.blob === undefined ? undefined : hexArg(a, 'blob');
        if (blob && (blob.length === 0 || blob.length > TRUST_BLOB_CAPACITY)) throw new HypervisorError(`trustInit: sealed root of ${blob.length} bytes (1..${TRUST_BLOB_CAPACITY})`, EXIT.BAD_INPUT);
        const [inBuf, out] = this.stage(blob ?? 0, TRUST_BLOB_CAPACITY);
        const r = this.call('TRUST_INIT', [blob ? inBuf! : 0n, BigInt(blob?.length ?? 0), out!, BigInt(TRUST_BLOB_CAPACITY)]);
        const len = Number(r.rdi);
        const newBlob = len > 0 ? this.out(out!, len).toString('hex') : null; // before HAK_PUBLIC reuses the scratch
        const hak = this.hakPublic();
        return {
          created: (Number(r.rsi) & TRUST_FLAG_CREATED) !== 0,
          pcrExtended: (Number(r.rsi) & TRUST_FLAG_PCR_EXTENDED) !== 0,
          blob: newBlob,
          hakPublic: hak.key,
          hakPcr: Number(r.rdx),
        };
      }
      case 'hakPublic':
        return this.hakPublic();
      case 'quote': {
        const [rep, out] = this.stage(hexArg(a, 'report', REPORT_SIZE), QUOTE_SIZE);
        this.call('QUOTE', [rep!, out!]);
        return this.out(out!, QUOTE_SIZE).toString('hex');
      }
      case 'keyslot.alloc':
        return Number(this.call('KEYSLOT_ALLOC', [BigInt(a.owner === undefined ? 0 : intArg(a, 'owner'))]).rdi);
      case 'keyslot.bind':
        this.call('KEYSLOT_BIND', [BigInt(intArg(a, 'slot')), BigInt(intArg(a, 'owner'))]);
        return null;
      case 'keyslot.release':
        this.call('KEYSLOT_RELEASE', [BigInt(intArg(a, 'slot'))]);
        return null;
      case 'keyslot.flush':
        return Number(this.call('KEYSLOT_FLUSH', []).rdi);
      case 'enclave.launch':
        return this.launch(intArg(a, 'id'), a.backend as BackendKind, a.policy === undefined ? undefined : intArg(a, 'policy'));
      case 'enclave.run':
        return this.run(intArg(a, 'id'), a);
      case 'enclave.memory': {
        const id = intArg(a, 'id');
        const off = Number(bigArg(a, 'offset'));
        const len = intArg(a, 'length');
        const meta = this.enclaves.get(id);
        if (!meta) throw HypervisorError.fromStatus('enclave.memory', 9, `enclave ${id}`);
        const info = this.enclaveInfo(id);
        if (off + len > Number(info.size)) throw new HypervisorError(`enclave ${id}: range 0x${off.toString(16)}+0x${len.toString(16)} beyond ELRANGE size 0x${info.size.toString(16)}`, EXIT.BAD_INPUT);
        const view = a.view === 'host' ? 'host' : 'enclave';
        if (meta.guest) return (view === 'host' ? meta.guest.hostRead(off, len) : meta.guest.guestRead(off, len)).toString('hex');
        // Without a backend the DRAM holds plaintext: both views are the EPC contents.
        return this.enclavePlaintext(id, info.size).subarray(off, off + len).toString('hex');
      }
      case 'hostAccess':
        return this.need().hostAccess(bigArg(a, 'gpa'), (a.access as HostAccessKind) ?? 'read');
      case 'stop':
        setImmediate(() => this.onStop?.());
        return null;
      default:
        throw new HypervisorError(`unknown request "${op}"`, EXIT.USAGE);
    }
  }

  onStop: (() => void) | undefined;

  private load(a: Record<string, unknown>): Promise<unknown> | unknown {
    if (this.loading) throw new HypervisorError('another load of a hypervisor image is in progress', EXIT.BUSY);
    if (this.core) throw new HypervisorError(`a hypervisor image is already loaded (${String(this.image?.id)}); \`hyperenclave emulator stop\` ends the service to load another`, EXIT.USAGE);
    const path = a.path;
    if (typeof path !== 'string') throw new HypervisorError('load: "path" missing', EXIT.USAGE);
    const want = typeof a.sha256 === 'string' ? a.sha256.toLowerCase() : undefined;
    this.loading = true;
    return (async () => {
      try {
        const img = await describeImage(resolve(path));
        if (want !== undefined && want !== img.sha256)
          throw new HypervisorError(`load: ${path}: image SHA-256 ${img.sha256} differs from the measured ${want}`, EXIT.VERIFY_FAILED);
        const base = this.reservedBase;
        const core = await this.opts.core();
        // the emulated platform's TPM: the core seals its root secret there (TRUST_INIT; the TPM
        // daemon is started then, not at load)
        const tpm = emulatedTpmSockets(this.opts.stateDir);
        this.core = core.createHypervisor({
          base,
          total: RESERVED_DEFAULT.hypervisor + this.epcBytes,
          hypervisorSize: RESERVED_DEFAULT.hypervisor,
          imageSize: RESERVED_DEFAULT.image,
          paging: 'ept',
          tpm,
          imageDigest: Buffer.from(img.sha256, 'hex'),
          keySlots: { kind: 'asid', min: 1, max: 15 },
          requireSignedSigstruct: true,
        });
        this.image = { ...img, loadedAt: new Date().toISOString() };
        this.lost = null; // loaded again: the loss is repaired
        return this.image;
      } finally {
        this.loading = false;
      }
    })();
  }

  private launch(id: number, kind: BackendKind, policy: number | undefined) {
    if (!BACKEND_KINDS.includes(kind)) throw new HypervisorError(`enclave.launch: backend "${String(kind)}" is not one of ${BACKEND_KINDS.join(', ')}`, EXIT.USAGE);
    const meta = this.enclaves.get(id);
    if (!meta) throw HypervisorError.fromStatus('enclave.launch', 9, `enclave ${id}`);
    if (meta.guest) throw new HypervisorError(`enclave ${id}: already launched with ${meta.backend}`, EXIT.USAGE);
    const info = this.enclaveInfo(id);
    const plain = this.enclavePlaintext(id, info.size);
    this.allocator.owner = id;
    const guest = this.backend(kind).launchStart({ memorySize: Number(info.size), ...(policy !== undefined ? { policy } : {}) });
    this.allocator.owner = 0;
    try {
      for (const p of this.need().enclavePages(id)) guest.updateData(Number(p.offset), plain.subarray(Number(p.offset), Number(p.offset) + PAGE_SIZE));
      const m = guest.measure();
      guest.finish();
      meta.guest = guest;
      meta.backend = kind;
      meta.launch = m;
      return { backend: kind, keySlot: kind === 'none' ? null : guest.slot, measurement: jsonable(m) };
    } catch (e) {
      guest.release();
      throw e;
    }
  }

  private run(id: number, a: Record<string, unknown>) {
    const core = this.need();
    const why = core.kvmUnavailable();
    if (why) throw new HypervisorError(`enclave run: ${why}`, EXIT.UNSUPPORTED);
    const meta = this.enclaves.get(id);
    if (!meta) throw HypervisorError.fromStatus('enclave.run', 9, `enclave ${id}`);
    if (meta.dead) throw new HypervisorError(`enclave ${id} (${meta.name}) is dead: ${meta.dead}; destroy it`, EXIT.BAD_INPUT);
    const ecalls = (Array.isArray(a.ecalls) ? (a.ecalls as Record<string, unknown>[]) : []).map((e) => ({
      fn: intArg(e, 'fn'),
      input: e.input === undefined ? Buffer.alloc(0) : hexArg(e, 'input'),
      tcs: e.tcs === undefined ? undefined : bigArg(e, 'tcs'),
      timeoutMs: e.timeoutMs === undefined ? undefined : Math.min(intArg(e, 'timeoutMs'), MAX_ECALL_TIMEOUT_MS),
    }));
    // The client serves this run's OCALLs on the socket it names (else an OCALL fails with code 7).
    const sock = typeof a.ocallSocket === 'string' ? a.ocallSocket : undefined;
    // A failed OCALL (no such entry, the handler threw, the client went away) is code 7 for the
    // enclave; the first such message of the ECALL goes into its result's error.
    let ocallError: string | undefined;
    const ocall =
      sock === undefined
        ? undefined
        : (nr: number, data: Buffer): Buffer | false => {
            try {
              return this.ocalls.call(sock, nr, data);
            } catch (e) {
              ocallError ??= (e as Error).message;
              return false;
            }
          };
    meta.vm ??= core.createVm(id, { timeoutMs: ECALL_TIMEOUT_MS });
    const vm = meta.vm;
    const out: unknown[] = [];
    try {
      return this.runEcalls(id, meta, vm, ecalls, ocall, out, () => {
        const m = ocallError;
        ocallError = undefined;
        return m;
      });
    } finally {
      if (sock !== undefined) this.ocalls.release(sock);
    }
  }

  private runEcalls(
    id: number,
    meta: EnclaveMeta,
    vm: EnclaveVmHandle,
    ecalls: { fn: number; input: Buffer; tcs: bigint | undefined; timeoutMs: number | undefined }[],
    ocall: ((nr: number, data: Buffer) => Buffer | false) | undefined,
    out: unknown[],
    takeOcallError: () => string | undefined,
  ) {
    for (const e of ecalls) {
      const tcs = e.tcs ?? this.firstTcs(id);
      const t0 = process.hrtime.bigint();
      const r = vm.ecall(tcs, e.fn, e.input, ocall, e.timeoutMs);
      const micros = Number(process.hrtime.bigint() - t0) / 1000;
      if (!r.ok) {
        if (r.dead) meta.dead = r.error;
        out.push({ fn: e.fn, ok: false, ret: null, output: '', error: r.error, micros });
        if (r.dead) break;
        continue;
      }
      // EAX at EEXIT: output length, or 0x8000_0000 | the enclave's error code.
      const failed = (r.status & 0x8000_0000) !== 0;
      out.push({
        fn: e.fn,
        ok: !failed,
        ret: '0x' + r.status.toString(16),
        output: r.output.toString('hex'),
        error: failed ? `ECALL ${e.fn} returned error code ${r.status & 0x7fff_ffff}${ocallFailure(takeOcallError())}` : (takeOcallError(), null),
        micros,
      });
    }
    this.syncEncrypted(id, meta);
    return out;
  }

  /** After the enclave ran, its writable pages in DRAM hold what it wrote, under its key. */
  private syncEncrypted(id: number, meta: EnclaveMeta): void {
    if (!meta.guest || meta.guest.state === 'released') return;
    for (const p of this.need().enclavePages(id)) if (p.type === 2 && p.perms & 2) meta.guest.guestWrite(Number(p.offset), this.need().readPhys(p.hpa, PAGE_SIZE));
  }

  private firstTcs(id: number): bigint {
    const t = this.need().enclavePages(id).find((p) => p.type === 1);
    if (!t) throw new HypervisorError(`enclave ${id}: has no TCS page`, EXIT.BAD_INPUT);
    return t.offset;
  }
}

const ocallFailure = (m: string | undefined): string => (m === undefined ? '' : ` (a failed OCALL: ${m})`);

/** bigint → "0x…", Buffer → hex, recursively (RPC results are JSON). */
export function jsonable(v: unknown): unknown {
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (Array.isArray(v)) return v.map(jsonable);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonable(x)]));
  return v;
}

/** The image to load: a measured container (src/measure) when it parses as one, else any file by its SHA-256. */
async function describeImage(path: string): Promise<{ id: string; path: string; sha256: string; format: 'container' | 'raw'; length: number }> {
  if (!existsSync(path)) throw new HypervisorError(`load: ${path} not found`, EXIT.NOT_FOUND);
  const bytes = readFileBounded(path, { what: 'load', kind: 'image' });
  const measure = await import('../../measure/index.js').catch(() => undefined);
  if (measure && bytes.subarray(0, 8).equals(measure.IMAGE_MAGIC)) {
    const v = await measure.verifyContainerFile(path, { banks: ['sha256'] });
    return { id: v.id, path, sha256: v.header.imageSha256.toString('hex'), format: 'container', length: v.containerLength };
  }
  const sha = createHash('sha256').update(bytes).digest('hex');
  return { id: sha, path, sha256: sha, format: 'raw', length: bytes.length };
}

// ---------------------------------------------------------------- the process

export function serviceDir(stateDir: string): string {
  return join(stateDir, 'emulated', 'hypervisor');
}

export interface ServiceRecord {
  pid: number;
  socket: string;
  startedAt: string;
  log: string;
}

export function serviceRecord(stateDir: string): ServiceRecord | undefined {
  const p = join(serviceDir(stateDir), 'instance.json');
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as ServiceRecord;
  } catch {
    return undefined;
  }
}

/** Runs the service in this process until `stop` (called by service-main.ts). */
export async function runService(opts: ServiceOptions): Promise<Server> {
  const dir = serviceDir(opts.stateDir);
  mkdirSync(dir, { recursive: true });
  // Unix socket paths are limited to ~107 bytes; fall back to a short path in /tmp.
  let socket = join(dir, 'hv.sock');
  if (Buffer.byteLength(socket) > 100) socket = join('/tmp', `hyperenclave-hv-${createHash('sha256').update(dir).digest('hex').slice(0, 16)}.sock`);
  rmSync(socket, { force: true });
  const svc = new HypervisorService(opts);
  svc.detectLoss(join(dir, 'held.json'));
  const server = serveRpc(socket, (op, args) => svc.handle(op, args));
  await new Promise<void>((res, rej) => {
    server.once('listening', res);
    server.once('error', rej);
  });
  const rec: ServiceRecord = { pid: process.pid, socket, startedAt: svc.startedAt, log: join(dir, 'service.log') };
  writeFileAtomic(join(dir, 'instance.json'), JSON.stringify(rec, null, 2) + '\n');
  const shutdown = () => {
    server.close();
    rmSync(socket, { force: true });
    const cur = serviceRecord(opts.stateDir);
    if (cur?.pid === process.pid) rmSync(join(dir, 'instance.json'), { force: true });
    process.exit(0);
  };
  svc.onStop = shutdown;
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  return server;
}

/** The compiled service entry (dist/…/service-main.js), also when running from the TypeScript sources. */
export function serviceEntry(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return join(dirname(here), 'service-main.js');
  const root = resolve(dirname(here), '..', '..', '..');
  return join(root, 'dist', 'src', 'platform', 'emulated', 'service-main.js');
}

/** The running service of this state directory, starting it detached when needed (one at a time: a lock file). */
export interface ServiceStartOptions {
  memoryMap?: 'machine' | 'synthetic';
  epcMiB?: number;
}

export async function ensureHypervisorService(stateDir: string, opts: ServiceStartOptions = {}): Promise<ServiceRecord> {
  const dir = serviceDir(stateDir);
  mkdirSync(dir, { recursive: true });
  return ensureDaemon({
    what: 'emulated hypervisor',
    lock: join(dir, 'start.lock'),
    current: () => serviceRecord(stateDir),
    reachable: (r) => canConnect(r.socket),
    start: async () => {
      const entry = serviceEntry();
      if (!existsSync(entry)) throw new HypervisorError(`emulated hypervisor: ${entry} missing (run \`npm run build\`)`, EXIT.INTERNAL);
      const log = join(dir, 'service.log');
      const fd = openSync(log, 'a');
      const args = [entry, '--state-dir', stateDir, ...(opts.memoryMap ? ['--memory-map', opts.memoryMap] : []), ...(opts.epcMiB ? ['--epc-mib', String(opts.epcMiB)] : [])];
      const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      child.unref();
      for (let i = 0; i < 200; i++) {
        await new Promise((r) => setTimeout(r, 25));
        const rec = serviceRecord(stateDir);
        if (rec && rec.pid === child.pid && (await canConnect(rec.socket))) return rec;
        if (child.exitCode !== null || !alive(child.pid!)) break;
      }
      const tail = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').slice(-1)[0]!.replace(/^\S+ emulated hypervisor service failed: /, '') : '';
      // The service exits with the exit code of what stopped it (a full disk is 9, not a bug).
      const code = child.exitCode !== null && child.exitCode > 1 ? child.exitCode : EXIT.INTERNAL;
      throw new HypervisorError(`emulated hypervisor did not start${tail ? `: ${tail}` : ''} (log ${log})`, code);
    },
  });
}

/** Stops the service (its enclaves and state are gone, as after a reboot). Returns whether one was running. */
export async function stopHypervisorService(stateDir: string): Promise<boolean> {
  const rec = serviceRecord(stateDir);
  if (!rec) return false;
  rmSync(join(serviceDir(stateDir), 'instance.json'), { force: true });
  if (!alive(rec.pid)) return false;
  process.kill(rec.pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(rec.pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive(rec.pid)) process.kill(rec.pid, 'SIGKILL');
  rmSync(rec.socket, { force: true });
  return true;
}

