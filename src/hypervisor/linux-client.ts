import { existsSync } from 'node:fs';
import { EXIT } from '../errors.js';
import {
  HC,
  HE_IOC,
  HE_STATE,
  HE_STRUCT_SIZE,
  HypervisorError,
  IOCTL_ABI_VERSION,
  abiMajor,
  decodeHeHypercall,
  decodeHeLoad,
  decodeHeStatus,
  decodeHeVersion,
  encodeHeHypercall,
  encodeHeLoad,
  encodeHeVersion,
  formatAbiVersion,
} from './abi.js';
import type { HypervisorClient, HypervisorStatus, LoadedImage } from './client.js';

export const HYPERENCLAVE_DEVICE = '/dev/hyperenclave';

/** What the linux client needs from the addon's syscall bridge. */
export interface IoctlBridge {
  open(path: string, flags: 'rw'): number;
  ioctl(fd: number, request: number, arg: Buffer | null): number;
  close(fd: number): void;
}

/**
 * The real machine's client: ioctls on /dev/hyperenclave (hypervisor/driver/hyperenclave_ioctl.h,
 * ioctl ABI 1.0). The driver forwards buffer-free hypercalls; enclave page and report calls carry
 * guest buffers the 1.0 ioctl set does not transport yet, so they are refused with that reason.
 */
export class LinuxHypervisorClient implements HypervisorClient {
  readonly platform = 'linux' as const;
  private constructor(
    private readonly io: IoctlBridge,
    private readonly fd: number,
  ) {}

  static async open(device = HYPERENCLAVE_DEVICE, bridge?: IoctlBridge): Promise<LinuxHypervisorClient> {
    if (!existsSync(device)) throw new HypervisorError(`${device} absent: kernel driver not loaded`, EXIT.NOT_FOUND);
    const io = bridge ?? (await loadIoctlBridge());
    let fd: number;
    try {
      fd = io.open(device, 'rw');
    } catch (e) {
      throw new HypervisorError(`${device}: ${(e as Error).message}`, EXIT.UNSUPPORTED);
    }
    const c = new LinuxHypervisorClient(io, fd);
    const v = c.ioctl('HE_IOC_VERSION', HE_IOC.VERSION, encodeHeVersion());
    const got = decodeHeVersion(v).ioctlAbi;
    if (abiMajor(got) !== abiMajor(IOCTL_ABI_VERSION))
      throw new HypervisorError(`${device}: driver speaks ioctl ABI ${formatAbiVersion(got)}, this tool ${formatAbiVersion(IOCTL_ABI_VERSION)}`, EXIT.UNSUPPORTED);
    return c;
  }

  private ioctl(name: string, req: number, arg: Buffer | null): Buffer {
    const buf = arg ?? Buffer.alloc(0);
    try {
      this.io.ioctl(this.fd, req, arg);
    } catch (e) {
      throw new HypervisorError(`${HYPERENCLAVE_DEVICE} ${name}: ${(e as Error).message}`, EXIT.INTERNAL);
    }
    return buf;
  }

  private hypercall(name: keyof typeof HC, args: bigint[]): { rdi: bigint; rsi: bigint; rdx: bigint } {
    const r = decodeHeHypercall(this.ioctl('HE_IOC_HYPERCALL', HE_IOC.HYPERCALL, encodeHeHypercall(HC[name], args)));
    if (r.rax !== 0n) throw HypervisorError.fromStatus(name, Number(r.rax));
    return r;
  }

  private unsupported(what: string): never {
    throw new HypervisorError(`${what}: not carried by the /dev/hyperenclave ioctl ABI ${formatAbiVersion(IOCTL_ABI_VERSION)} (needs guest buffers)`, EXIT.UNSUPPORTED);
  }

  async version(callerAbi?: number): Promise<number> {
    return Number(this.hypercall('VERSION', [BigInt(callerAbi ?? 0)]).rdi);
  }
  async status(): Promise<HypervisorStatus> {
    const s = decodeHeStatus(this.ioctl('HE_IOC_STATUS', HE_IOC.STATUS, Buffer.alloc(HE_STRUCT_SIZE.status)));
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
      enclaves: [],
      process: null,
    };
  }
  async load(path: string, sha256: string): Promise<LoadedImage> {
    const r = decodeHeLoad(this.ioctl('HE_IOC_LOAD', HE_IOC.LOAD, encodeHeLoad(path.replace(/^\/lib\/firmware\//, ''))));
    if (r.imageSha256.toString('hex') !== sha256.toLowerCase())
      throw new HypervisorError(`load: driver measured ${r.imageSha256.toString('hex')}, expected ${sha256}`, EXIT.VERIFY_FAILED);
    return { id: sha256, path, sha256, format: 'container', length: Number(r.imageLength), loadedAt: new Date().toISOString() };
  }
  async enable(memoryMap?: readonly unknown[]): Promise<void> {
    if (memoryMap) this.unsupported('enable with an explicit memory map (the driver uses the firmware map)');
    this.ioctl('HE_IOC_ENABLE', HE_IOC.ENABLE, null);
  }
  async disable(): Promise<void> {
    this.ioctl('HE_IOC_DISABLE', HE_IOC.DISABLE, null);
  }
  async imageDigest(): Promise<Buffer> {
    return decodeHeStatus(this.ioctl('HE_IOC_STATUS', HE_IOC.STATUS, Buffer.alloc(HE_STRUCT_SIZE.status))).imageSha256;
  }
  enclaveCreate(): Promise<number> {
    return this.unsupported('ENCLAVE_CREATE');
  }
  enclaveAdd(): Promise<void> {
    return this.unsupported('ENCLAVE_ADD');
  }
  async enclaveExtend(id: number, offset: bigint): Promise<void> {
    this.hypercall('ENCLAVE_EXTEND', [BigInt(id), offset]);
  }
  enclaveAddPages(): Promise<void> {
    return this.unsupported('ENCLAVE_ADD');
  }
  enclaveInit(): Promise<void> {
    return this.unsupported('ENCLAVE_INIT');
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
  enclaveInfo(): Promise<never> {
    return this.unsupported('ENCLAVE_INFO');
  }
  async enclaveList() {
    return [];
  }
  report(): Promise<Buffer> {
    return this.unsupported('REPORT');
  }
  verifyReport(): Promise<boolean> {
    return this.unsupported('VERIFY_REPORT');
  }
  reportKey(): Promise<string> {
    return this.unsupported('REPORT_KEY');
  }
  signReport(): Promise<Buffer> {
    return this.unsupported('SIGN_REPORT');
  }
  getKey(): Promise<Buffer> {
    return this.unsupported('GET_KEY');
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
    return this.unsupported('enclave launch');
  }
  enclaveRun(): Promise<never> {
    return this.unsupported('enclave run');
  }
  enclaveMemory(): Promise<Buffer> {
    return this.unsupported('enclave memory views');
  }
  async hostAccess(gpa: bigint): Promise<string | null> {
    return this.unsupported(`host access probe at 0x${gpa.toString(16)} (use HE_IOC_PROBE)`);
  }
  close(): void {
    this.io.close(this.fd);
  }
}

/** The addon's ioctl bridge, adapted. */
export async function loadIoctlBridge(): Promise<IoctlBridge> {
  const { addonIoctlBridge } = await import('./addon-adapter.js');
  return addonIoctlBridge();
}
