import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { EXIT } from '../../errors.js';
import {
  type BackendKind,
  type EncryptedGuest,
  type KeySlotAllocator,
  type KeySlotKind,
  type MemoryEncryptionBackend,
  BACKEND_KINDS,
  EMULATED_KEY_SLOTS,
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
import { writeFileAtomic } from '../../fs/atomic.js';
import { readMachineMemoryMap, SYNTHETIC_MEMORY_MAP } from '../memory-map.js';
import { CoreSlotAllocator } from './core-slots.js';
import { bigArg, hexArg, intArg, jsonable } from './rpc-values.js';
import { OcallBridge } from './ocall-bridge.js';
import { alive } from './daemon.js';
import { RESERVED_DEFAULT, SCRATCH_BASE, SCRATCH_SIZE, placeReservedRegion } from './reservation.js';
import { describeImage } from './image-file.js';
import type { HeldState, LostState } from './held-state.js';
import { emulatedTpmSockets, ensureEmulatedTpm } from './tpm-daemon.js';

/**
 * The emulated platform's hypervisor: one long-lived process per state directory holding the
 * Rust core (through the addon) and serving the driver ABI over newline-JSON RPC on a Unix
 * socket. Requests become real hypercalls (`hypercall::dispatch`) whose buffers sit in a
 * scratch area of host RAM, so after ENABLE they pass the host's nested tables as on hardware.
 */

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
      // One key-slot table (the core's, EMULATED_KEY_SLOTS) serves every backend model (MKTME: EMULATED_MKTME).
      b = createBackend(kind, ctx);
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
          keySlots: { kind: 'asid', min: EMULATED_KEY_SLOTS.first, max: EMULATED_KEY_SLOTS.last },
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
