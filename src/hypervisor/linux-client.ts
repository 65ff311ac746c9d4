import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { EXIT } from '../errors.js';
import {
  ENCLAVE_INFO_SIZE,
  HC,
  HAK_PUBLIC_SIZE,
  HE_BUF_ARG_MASK,
  HE_HYPERCALL_BUF_MAX,
  HE_RESUME_BUDGET_SHIFT,
  HE_STATE,
  HypervisorError,
  IOCTL_ABI_VERSION,
  PAGE_SIZE,
  QUOTE_SIZE,
  REPORT_SIZE,
  TRUST_BLOB_CAPACITY,
  TRUST_FLAG_CREATED,
  TRUST_FLAG_PCR_EXTENDED,
  SIGSTRUCT_SIZE,
  type SecsSpec,
  ECALL,
  abiMajor,
  decodeEnclaveInfo,
  decodeHeHypercall,
  decodeHeLoad,
  decodeHeStatus,
  decodeHeVersion,
  encodeHeHypercall,
  encodeHeLoad,
  encodeHeVersion,
  encodeSecs,
  encodeTargetInfo,
  formatAbiVersion,
  statusName,
} from './abi.js';
import { enclaveSummary, OCALL_FAILED, OCALL_HEAP_GROW, type EcallRequest, type EcallResult, type EnclaveRunOptions, type EnclaveSummary, type HypervisorClient, type HypervisorStatus, type HypervisorTraits, type LoadedImage, type TrustInitResult } from './client.js';
import type { EnclaveInfoRecord } from './abi.js';

export const HYPERENCLAVE_DEVICE = '/dev/hyperenclave';

/**
 * What the linux client needs from the addon: one typed call per /dev/hyperenclave ioctl
 * (hypervisor/addon/src/device.rs), records as the generated layouts' bytes. No request number or
 * user pointer crosses it: the addon picks the request and points he_hypercall.buf at `staging`.
 */
export interface DeviceBridge {
  open(path: string, flags: 'rw'): number;
  close(fd: number): void;
  version(fd: number, rec: Buffer): Buffer;
  load(fd: number, rec: Buffer): Buffer;
  enable(fd: number): void;
  disable(fd: number): void;
  status(fd: number): Buffer;
  /** The driver copies the first buf_len bytes of `staging` in and back. */
  hypercall(fd: number, rec: Buffer, staging: Buffer | null): Buffer;
}

/** ENCLAVE_CALL's R8 when aborting an interrupted ECALL. */
const ECALL_ABORT = 0xffff_ffff_ffff_ffffn;
/** How long an ECALL may keep being interrupted before it is aborted (the emulated runner's watchdog). */
const ECALL_BUDGET_MS = 2000;

/** A hypercall argument: a number, or a buffer the driver stages in a kernel page (`out`: bytes to read back). */
type HcArg = bigint | { in: Buffer } | { out: number } | { in: Buffer; out: number };

/**
 * The real machine's client: ioctls on /dev/hyperenclave (hypervisor/driver/hyperenclave_ioctl.h).
 * Hypercalls with buffers (SECS, pages, SIGSTRUCT, REPORT, KEYREQUEST) pack them into one page the
 * driver copies in and out (ioctl ABI 1.1); the hypervisor checks every buffer page against the
 * host tables, as on the emulated platform.
 */
export class LinuxHypervisorClient implements HypervisorClient {
  readonly platform = 'linux' as const;
  readonly traits: HypervisorTraits = { launchesPlainEnclaves: false, capsPcrOnDisable: true, namesEnclaves: false };
  private constructor(
    private readonly io: DeviceBridge,
    private readonly fd: number,
    private readonly driverAbi: number = IOCTL_ABI_VERSION,
  ) {}

  static async open(device = HYPERENCLAVE_DEVICE, bridge?: DeviceBridge): Promise<LinuxHypervisorClient> {
    if (!existsSync(device)) throw new HypervisorError(`${device} absent: kernel driver not loaded`, EXIT.NOT_FOUND);
    const io = bridge ?? (await loadDeviceBridge());
    let fd: number;
    try {
      fd = io.open(device, 'rw');
    } catch (e) {
      throw new HypervisorError(`${device}: ${(e as Error).message}`, EXIT.UNSUPPORTED);
    }
    const probe = new LinuxHypervisorClient(io, fd);
    const got = decodeHeVersion(probe.device('HE_IOC_VERSION', (fd) => io.version(fd, encodeHeVersion()))).ioctlAbi;
    if (abiMajor(got) !== abiMajor(IOCTL_ABI_VERSION)) {
      io.close(fd);
      throw new HypervisorError(`${device}: driver speaks ioctl ABI ${formatAbiVersion(got)}, this tool ${formatAbiVersion(IOCTL_ABI_VERSION)}`, EXIT.UNSUPPORTED);
    }
    return new LinuxHypervisorClient(io, fd, got);
  }

  private device<T>(name: string, call: (fd: number) => T): T {
    try {
      return call(this.fd);
    } catch (e) {
      throw new HypervisorError(`${HYPERENCLAVE_DEVICE} ${name}: ${(e as Error).message}`, EXIT.INTERNAL);
    }
  }

  private driverStatus(): ReturnType<typeof decodeHeStatus> {
    return decodeHeStatus(this.device('HE_IOC_STATUS', (fd) => this.io.status(fd)));
  }

  private hypercall(name: keyof typeof HC, args: bigint[]): { rdi: bigint; rsi: bigint; rdx: bigint } {
    return this.hypercallWith(name, args).regs;
  }

  /** A hypercall whose buffer arguments are packed (64-byte aligned, the first at 0) into one staging page. */
  private hypercallWith(
    name: keyof typeof HC,
    args: HcArg[],
    opts: { budgetMs?: number; statuses?: readonly string[] } = {},
  ): { rax: bigint; regs: { rdi: bigint; rsi: bigint; rdx: bigint; r8: bigint }; out: Buffer[] } {
    const regs: bigint[] = [];
    const spans: { at: number; out: number }[] = [];
    let mask = 0;
    let used = 0;
    const parts: { at: number; data: Buffer }[] = [];
    args.forEach((a, i) => {
      if (typeof a === 'bigint') return void regs.push(a);
      const len = Math.max('in' in a ? a.in.length : 0, 'out' in a ? a.out : 0);
      const at = used;
      used = at + Math.ceil(len / 64) * 64;
      if ('in' in a) parts.push({ at, data: a.in });
      if ('out' in a) spans.push({ at, out: a.out });
      mask |= 1 << i;
      regs.push(BigInt(at));
    });
    let staging: Buffer | undefined;
    let arg: Buffer;
    if (mask) {
      if (abiMajor(this.driverAbi) === 1 && (this.driverAbi & 0xffff) < 1)
        throw new HypervisorError(`${name}: the driver speaks ioctl ABI ${formatAbiVersion(this.driverAbi)}, buffer hypercalls need 1.1 (load the current hyperenclave.ko)`, EXIT.UNSUPPORTED);
      if (used > HE_HYPERCALL_BUF_MAX) throw new HypervisorError(`${name}: ${used} bytes of buffers exceed the driver's staging area (${HE_HYPERCALL_BUF_MAX} bytes)`, EXIT.BAD_INPUT);
      staging = Buffer.alloc(used);
      for (const p of parts) p.data.copy(staging, p.at);
      const budget = (opts.budgetMs ?? 0) << HE_RESUME_BUDGET_SHIFT;
      arg = encodeHeHypercall(HC[name], regs, { pointer: 0n, length: used, arg: (HE_BUF_ARG_MASK | mask | budget) >>> 0 });
    } else arg = encodeHeHypercall(HC[name], regs);
    const r = decodeHeHypercall(this.device('HE_IOC_HYPERCALL', (fd) => this.io.hypercall(fd, arg, staging ?? null)));
    if (r.rax !== 0n && !opts.statuses?.includes(statusName(Number(r.rax)))) throw HypervisorError.fromStatus(name, Number(r.rax));
    return { rax: r.rax, regs: r, out: spans.map((s) => Buffer.from(staging!.subarray(s.at, s.at + s.out))) };
  }

  private unsupported(what: string, why = 'needs the emulated platform\'s service'): never {
    throw new HypervisorError(`${what}: not available through /dev/hyperenclave (${why})`, EXIT.UNSUPPORTED);
  }

  async version(callerAbi?: number): Promise<number> {
    return Number(this.hypercall('VERSION', [BigInt(callerAbi ?? 0)]).rdi);
  }
  async status(): Promise<HypervisorStatus> {
    const s = this.driverStatus();
    return {
      platform: 'linux',
      loaded: s.state >= HE_STATE.LOADED,
      image:
        s.state >= HE_STATE.LOADED
          ? { id: s.imageSha256.toString('hex'), path: '/lib/firmware', sha256: s.imageSha256.toString('hex'), format: 'container', length: Number(s.imageLength), loadedAt: '' }
          : null,
      enabled: s.state === HE_STATE.ENABLED,
      cpus: s.cpusEnabled,
      memmap: s.reservedSize ? `memmap=${s.reservedSize >> 20n}M$0x${s.reservedBase.toString(16)}` : null,
      hv: s.hv ?? null,
      enclaves: s.hv && s.hv.enclaves > 0 ? await this.enclaveList() : [],
      process: null,
    };
  }
  /** Loads through request_firmware: the image must live under /lib/firmware. The driver measures it into its PCR. */
  async load(path: string, sha256: string): Promise<LoadedImage> {
    const m = /^\/(?:usr\/)?lib\/firmware\/(.+)$/.exec(resolve(path));
    if (!m) throw new HypervisorError(`load: ${path} is not under /lib/firmware (the driver loads the image with request_firmware)`, EXIT.BAD_INPUT);
    const r = decodeHeLoad(this.device('HE_IOC_LOAD', (fd) => this.io.load(fd, encodeHeLoad(m[1]!))));
    if (r.imageSha256.toString('hex') !== sha256.toLowerCase())
      throw new HypervisorError(`load: driver measured ${r.imageSha256.toString('hex')}, expected ${sha256}`, EXIT.VERIFY_FAILED);
    return { id: sha256, path, sha256, format: 'container', length: Number(r.imageLength), loadedAt: new Date().toISOString(), measured: { pcr: r.pcr, banks: r.banks } };
  }
  async enable(memoryMap?: readonly unknown[]): Promise<void> {
    if (memoryMap) this.unsupported('enable with an explicit memory map (the driver uses the firmware map)');
    this.device('HE_IOC_ENABLE', (fd) => this.io.enable(fd));
  }
  async disable(): Promise<void> {
    this.device('HE_IOC_DISABLE', (fd) => this.io.disable(fd));
  }
  /** The PCR the driver measures images into (its `pcr` module parameter). */
  async measurementPcr(): Promise<number> {
    return this.driverStatus().pcr;
  }
  async imageDigest(): Promise<Buffer> {
    return this.driverStatus().imageSha256;
  }
  async enclaveCreate(secs: SecsSpec): Promise<number> {
    return Number(this.hypercallWith('ENCLAVE_CREATE', [{ in: encodeSecs(secs) }]).regs.rdi);
  }
  async enclaveAdd(id: number, offset: bigint, page: Buffer, flags: number): Promise<void> {
    if (page.length !== PAGE_SIZE) throw new HypervisorError(`ENCLAVE_ADD: page of ${page.length} bytes (must be ${PAGE_SIZE})`, EXIT.BAD_INPUT);
    this.hypercallWith('ENCLAVE_ADD', [BigInt(id), offset, { in: page }, BigInt(flags)]);
  }
  async enclaveExtend(id: number, offset: bigint): Promise<void> {
    this.hypercall('ENCLAVE_EXTEND', [BigInt(id), offset]);
  }
  async enclaveAddPages(id: number, pages: readonly { offset: bigint; data: Buffer; flags: number; measure: boolean }[]): Promise<void> {
    for (const p of pages) {
      await this.enclaveAdd(id, p.offset, p.data, p.flags);
      if (p.measure) for (let c = 0n; c < BigInt(PAGE_SIZE); c += 256n) await this.enclaveExtend(id, p.offset + c);
    }
  }
  async enclaveInit(id: number, sigstruct: Buffer): Promise<void> {
    if (sigstruct.length !== SIGSTRUCT_SIZE) throw new HypervisorError(`ENCLAVE_INIT: SIGSTRUCT of ${sigstruct.length} bytes (must be ${SIGSTRUCT_SIZE})`, EXIT.BAD_INPUT);
    this.hypercallWith('ENCLAVE_INIT', [BigInt(id), { in: sigstruct }]);
  }
  async enclaveEnter(id: number, tcs: bigint) {
    const r = this.hypercall('ENCLAVE_ENTER', [BigInt(id), tcs]);
    return { entry: r.rdi, tcs: r.rsi, ssa: r.rdx };
  }
  async enclaveExit(id: number, tcs: bigint): Promise<void> {
    this.hypercall('ENCLAVE_EXIT', [BigInt(id), tcs]);
  }
  async enclaveDestroy(id: number): Promise<number> {
    return Number(this.hypercall('ENCLAVE_DESTROY', [BigInt(id)]).rdi);
  }
  async enclaveInfo(id: number): Promise<EnclaveInfoRecord> {
    const { out } = this.hypercallWith('ENCLAVE_INFO', [BigInt(id), { out: ENCLAVE_INFO_SIZE }, BigInt(ENCLAVE_INFO_SIZE)]);
    return decodeEnclaveInfo(out[0]!);
  }
  /** Ids are handed out from 1 upward: ask ENCLAVE_INFO for each created id until every live one is found. */
  async enclaveList(): Promise<EnclaveSummary[]> {
    const hv = this.driverStatus().hv;
    if (!hv) return [];
    const out: EnclaveSummary[] = [];
    for (let id = hv.enclavesCreated; id >= 1 && out.length < hv.enclaves; id--) {
      let i: EnclaveInfoRecord;
      try {
        i = await this.enclaveInfo(id);
      } catch (e) {
        if (e instanceof HypervisorError && e.statusName === 'NO_SUCH_ENCLAVE') continue;
        throw e;
      }
      out.push(enclaveSummary(id, `enclave-${id}`, i, 'none', null)); // the hypervisor keeps no names
    }
    return out.reverse();
  }
  async verifyReport(report: Buffer, targetMrenclave: Buffer): Promise<boolean> {
    try {
      this.hypercallWith('VERIFY_REPORT', [{ in: report }, { in: targetMrenclave }]);
      return true;
    } catch (e) {
      if (e instanceof HypervisorError && e.statusName === 'REPORT_MAC_MISMATCH') return false;
      throw e;
    }
  }
  async trustInit(blob?: Buffer): Promise<TrustInitResult> {
    if (blob && (blob.length === 0 || blob.length > TRUST_BLOB_CAPACITY)) throw new HypervisorError(`TRUST_INIT: sealed root of ${blob.length} bytes (1..${TRUST_BLOB_CAPACITY})`, EXIT.BAD_INPUT);
    // blob (if any) and the output buffer share the driver's staging area (ioctl ABI 1.2: up to 16 KiB)
    const r = blob
      ? this.hypercallWith('TRUST_INIT', [{ in: blob }, BigInt(blob.length), { out: TRUST_BLOB_CAPACITY }, BigInt(TRUST_BLOB_CAPACITY)])
      : this.hypercallWith('TRUST_INIT', [0n, 0n, { out: TRUST_BLOB_CAPACITY }, BigInt(TRUST_BLOB_CAPACITY)]);
    const len = Number(r.regs.rdi);
    const flags = Number(r.regs.rsi);
    const hak = await this.hakPublic();
    return {
      created: (flags & TRUST_FLAG_CREATED) !== 0,
      pcrExtended: (flags & TRUST_FLAG_PCR_EXTENDED) !== 0,
      ...(len > 0 ? { blob: Buffer.from(r.out[0]!.subarray(0, len)) } : {}),
      hakPublic: hak.key,
      hakPcr: Number(r.regs.rdx),
    };
  }
  async hakPublic(): Promise<{ key: Buffer; pcr: number }> {
    const r = this.hypercallWith('HAK_PUBLIC', [{ out: HAK_PUBLIC_SIZE }]);
    return { key: r.out[0]!, pcr: Number(r.regs.rdi) };
  }
  async quote(report: Buffer): Promise<Buffer> {
    if (report.length !== REPORT_SIZE) throw new HypervisorError(`QUOTE: REPORT of ${report.length} bytes (must be ${REPORT_SIZE})`, EXIT.BAD_INPUT);
    return this.hypercallWith('QUOTE', [{ in: report }, { out: QUOTE_SIZE }]).out[0]!;
  }
  async keyslotAlloc(owner?: number): Promise<number> {
    return Number(this.hypercall('KEYSLOT_ALLOC', [BigInt(owner ?? 0)]).rdi);
  }
  async keyslotBind(slot: number, owner: number): Promise<void> {
    this.hypercall('KEYSLOT_BIND', [BigInt(slot), BigInt(owner)]);
  }
  async keyslotRelease(slot: number): Promise<void> {
    this.hypercall('KEYSLOT_RELEASE', [BigInt(slot)]);
  }
  async keyslotFlush(): Promise<number> {
    return Number(this.hypercall('KEYSLOT_FLUSH', []).rdi);
  }
  enclaveLaunch(): Promise<never> {
    return this.unsupported('enclave launch', 'the bare-metal hypervisor does not run enclave VMs yet');
  }
  /**
   * ECALLs through ENCLAVE_CALL: the hypervisor runs the thread on this CPU. An interrupt parks it
   * (ENCLAVE_INTERRUPTED); since ioctl ABI 1.4 the driver resumes it itself within a budget (one
   * ioctl per ECALL, not one per timer tick), before that this loop repeats the call. After
   * ECALL_BUDGET_MS of that it is aborted, as the emulated runner's watchdog does. An OCALL
   * (ENCLAVE_OCALL) is served from `opts.ocalls` and answered with ENCLAVE_OCALL_RETURN.
   */
  async enclaveRun(id: number, ecalls: readonly EcallRequest[], opts: EnclaveRunOptions = {}): Promise<EcallResult[]> {
    const out: EcallResult[] = [];
    const loop = abiMajor(this.driverAbi) === 1 && (this.driverAbi & 0xffff) >= 4;
    const warned = new Set<number>();
    for (const e of ecalls) {
      if (e.tcs === undefined) throw new HypervisorError(`ENCLAVE_CALL: ECALL ${e.fn} names no TCS offset`, EXIT.USAGE);
      const input = e.input ?? Buffer.alloc(0);
      if (input.length > PAGE_SIZE) throw new HypervisorError(`ENCLAVE_CALL: input of ${input.length} bytes (the shared buffer holds ${PAGE_SIZE})`, EXIT.BAD_INPUT);
      const t0 = process.hrtime.bigint();
      const budgetMs = e.timeoutMs ?? ECALL_BUDGET_MS;
      let resumes = 0;
      let ioctls = 0;
      let ocalls = 0;
      let error: string | null = null;
      let done: { status: bigint; output: Buffer } | undefined;
      // the next hypercall: the ECALL itself, a resume, or the answer to an OCALL
      let next: { name: 'ENCLAVE_CALL' | 'ENCLAVE_OCALL_RETURN'; args: HcArg[] } = {
        name: 'ENCLAVE_CALL',
        args: [BigInt(id), e.tcs, BigInt(e.fn), { in: input, out: PAGE_SIZE }, BigInt(input.length)],
      };
      for (;;) {
        const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
        const budget = loop ? Math.max(1, Math.min(0xffff, Math.ceil(budgetMs - elapsedMs))) : 0;
        const r = this.hypercallWith(next.name, next.args, { budgetMs: budget, statuses: ['ENCLAVE_INTERRUPTED', 'ENCLAVE_OCALL', 'ENCLAVE_FAULT', 'SSA_INVALID'] });
        ioctls++;
        const st = statusName(Number(r.rax));
        resumes += Number(loop ? r.regs.r8 : 0n);
        if (st === 'SUCCESS') {
          done = { status: r.regs.rdi, output: r.out[0]! };
          break;
        }
        if (st === 'ENCLAVE_FAULT') {
          error = `ECALL ${e.fn}: the enclave thread faulted (see the hypervisor log)`;
          break;
        }
        if (st === 'SSA_INVALID') {
          error = `ECALL ${e.fn}: SSA_INVALID: the enclave resumed a forged SSA frame; the thread was ended (see the hypervisor log)`;
          break;
        }
        if (st === 'ENCLAVE_OCALL') {
          ocalls++;
          const nr = Number(r.regs.rdi);
          const len = Number(r.regs.rsi);
          let answer = BigInt(ECALL.ERROR) + BigInt(OCALL_FAILED);
          let reply: Buffer = Buffer.alloc(0);
          const handler = opts.ocalls && Object.prototype.hasOwnProperty.call(opts.ocalls, nr) ? opts.ocalls[nr] : undefined;
          const input = Buffer.from(r.out[0]!.subarray(0, Math.min(len, PAGE_SIZE)));
          if (len > PAGE_SIZE) {
            process.stderr.write(`OCALL ${nr}: input of ${len} bytes exceeds the shared buffer (${PAGE_SIZE})\n`);
          } else if (nr === OCALL_HEAP_GROW && !handler) {
            // rt's heap_grow: u64 ELRANGE offset, u64 page count → ENCLAVE_AUGMENT, answer length 0
            if (len === 16) {
              try {
                this.hypercall('ENCLAVE_AUGMENT', [BigInt(id), input.readBigUInt64LE(0), input.readBigUInt64LE(8)]);
                answer = 0n;
              } catch (err) {
                process.stderr.write(`OCALL heap_grow: ${(err as Error).message}\n`);
              }
            }
          } else if (typeof handler !== 'function') {
            if (!warned.has(nr)) process.stderr.write(`OCALL ${nr}: no such entry\n`);
            warned.add(nr);
          } else {
            try {
              const got = Buffer.from(handler(input) ?? Buffer.alloc(0));
              if (got.length > PAGE_SIZE) process.stderr.write(`OCALL ${nr}: answer of ${got.length} bytes exceeds the shared buffer (${PAGE_SIZE})\n`);
              else {
                reply = got;
                answer = BigInt(got.length);
              }
            } catch (err) {
              process.stderr.write(`OCALL ${nr}: handler failed: ${(err as Error).message}\n`);
            }
          }
          next = { name: 'ENCLAVE_OCALL_RETURN', args: [BigInt(id), e.tcs, answer, { in: reply, out: PAGE_SIZE }] };
          continue;
        }
        // ENCLAVE_INTERRUPTED: the driver's budget was spent or a signal is pending
        if (Number(process.hrtime.bigint() - t0) / 1e6 > budgetMs) {
          this.hypercallWith('ENCLAVE_CALL', [BigInt(id), e.tcs, BigInt(e.fn), { out: PAGE_SIZE }, ECALL_ABORT], { statuses: ['ENCLAVE_FAULT'] });
          error = `ECALL ${e.fn} ran longer than ${budgetMs} ms (${resumes} interrupts, ${loop ? `resumed by the driver in ${ioctls} ioctl(s)` : `${ioctls} ioctls`}): aborted`;
          break;
        }
        if (!loop) resumes++;
        next = { name: 'ENCLAVE_CALL', args: [BigInt(id), e.tcs, BigInt(e.fn), { out: PAGE_SIZE }, 0n] };
      }
      const micros = Number(process.hrtime.bigint() - t0) / 1000;
      if (!done) {
        out.push({ fn: e.fn, ok: false, ret: null, output: Buffer.alloc(0), error, micros, ocalls });
        break; // the thread is dead until the enclave is destroyed
      }
      const status = done.status;
      const failed = (status & BigInt(ECALL.ERROR)) !== 0n;
      out.push({
        fn: e.fn,
        ok: !failed,
        ret: status,
        output: failed ? Buffer.alloc(0) : done.output.subarray(0, Number(status)),
        error: failed ? `ECALL ${e.fn} returned error code ${Number(status & 0x7fff_ffffn)}` : null,
        micros,
        ocalls,
      });
    }
    return out;
  }
  enclaveMemory(): Promise<Buffer> {
    return this.unsupported('enclave memory views', 'use HE_IOC_PROBE');
  }
  async hostAccess(gpa: bigint): Promise<string | null> {
    return this.unsupported(`host access probe at 0x${gpa.toString(16)} (use HE_IOC_PROBE)`);
  }
  close(): void {
    this.io.close(this.fd);
  }
}

/** The addon's ioctl bridge, adapted. */
export async function loadDeviceBridge(): Promise<DeviceBridge> {
  const { addonDeviceBridge } = await import('./addon-adapter.js');
  return addonDeviceBridge();
}
