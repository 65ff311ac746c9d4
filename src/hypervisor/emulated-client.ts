import type { BackendKind, LaunchMeasurement } from '../enclave/backends/index.js';
import { RpcClient } from '../platform/emulated/rpc.js';
import { serveOcalls } from '../platform/emulated/ocall-bridge.js';
import { HypervisorError } from './abi.js';
import { EXIT } from '../errors.js';
import { type ServiceStartOptions, ensureHypervisorService, serviceRecord, stopHypervisorService } from '../platform/emulated/service-process.js';
import {
  type EnclaveInfoRecord,
  type HvStatusRecord,
  type MemRangeSpec,
  type SecsSpec,
  encodeMemoryMap,
  encodeSecs,
} from './abi.js';
import type { EcallRequest, EcallResult, EnclaveRunOptions, EnclaveSummary, EntryInfo, HostAccessKind, HypervisorClient, HypervisorStatus, HypervisorTraits, LaunchResult, LoadedImage, TrustInitResult } from './client.js';

const hex = (b: Buffer): string => b.toString('hex');
const big = (s: string): bigint => BigInt(s);

/** Revives the JSON forms the service sends ("0x…" → bigint, hex → Buffer) for known record fields. */
function reviveStatus(raw: Record<string, unknown>): HvStatusRecord {
  const r = { ...raw } as Record<string, unknown>;
  for (const k of ['reservedBase', 'hypervisorBytes', 'imageBytes', 'epcBytes']) r[k] = big(r[k] as string);
  r.imageDigest = Buffer.from(r.imageDigest as string, 'hex');
  const dma = r.dma as { protected: boolean; faults: number; iommuBase: string } | undefined;
  if (dma) r.dma = { ...dma, iommuBase: big(dma.iommuBase) };
  return r as unknown as HvStatusRecord;
}
function reviveInfo(raw: Record<string, unknown>): EnclaveInfoRecord {
  const r = { ...raw } as Record<string, unknown>;
  for (const k of ['base', 'size', 'nestedPointer', 'attributes', 'xfrm']) r[k] = big(r[k] as string);
  for (const k of ['mrenclave', 'mrsigner']) r[k] = Buffer.from(r[k] as string, 'hex');
  return r as unknown as EnclaveInfoRecord;
}
function reviveLaunch(raw: Record<string, unknown>): LaunchMeasurement {
  const r = { ...raw } as Record<string, unknown>;
  for (const k of ['measurement', 'mnonce', 'launchDigest']) r[k] = Buffer.from(r[k] as string, 'hex');
  return r as unknown as LaunchMeasurement;
}

/** The emulated platform's client: RPC to the service process of one state directory (started on first use). */
export class EmulatedHypervisorClient implements HypervisorClient {
  readonly platform = 'emulated' as const;
  readonly traits: HypervisorTraits = { launchesPlainEnclaves: true, capsPcrOnDisable: false, namesEnclaves: true };
  private constructor(
    private readonly rpc: RpcClient,
    readonly stateDir: string,
  ) {}

  static async connect(stateDir: string, opts: { start?: boolean } & ServiceStartOptions = {}): Promise<EmulatedHypervisorClient> {
    const { start, ...startOpts } = opts;
    const rec = start === false ? serviceRecord(stateDir) : await ensureHypervisorService(stateDir, startOpts);
    if (!rec) {
      const { HypervisorError } = await import('./abi.js');
      throw new HypervisorError(`emulated hypervisor is not running (state ${stateDir})`, 3);
    }
    return new EmulatedHypervisorClient(await RpcClient.connect(rec.socket), stateDir);
  }

  /** Ends the service process of this state directory. */
  static stop(stateDir: string): Promise<boolean> {
    return stopHypervisorService(stateDir);
  }

  version(callerAbi?: number): Promise<number> {
    return this.rpc.call<number>('version', callerAbi === undefined ? {} : { abi: callerAbi });
  }
  async status(): Promise<HypervisorStatus> {
    const s = await this.rpc.call<HypervisorStatus & { hv: Record<string, unknown> | null }>('status');
    return { ...s, hv: s.hv ? reviveStatus(s.hv) : null };
  }
  load(path: string, sha256: string): Promise<LoadedImage> {
    return this.rpc.call<LoadedImage>('load', { path, sha256 });
  }
  async enable(memoryMap?: readonly MemRangeSpec[]): Promise<void> {
    await this.rpc.call('enable', memoryMap ? { map: hex(encodeMemoryMap(memoryMap)) } : {});
  }
  async disable(): Promise<void> {
    await this.rpc.call('disable');
  }
  async imageDigest(): Promise<Buffer> {
    return Buffer.from(await this.rpc.call<string>('imageDigest'), 'hex');
  }
  enclaveCreate(secs: SecsSpec, meta: { name?: string } = {}): Promise<number> {
    return this.rpc.call<number>('enclave.create', { secs: hex(encodeSecs(secs)), ...(meta.name ? { name: meta.name } : {}) });
  }
  async enclaveAdd(id: number, offset: bigint, page: Buffer, flags: number): Promise<void> {
    await this.rpc.call('enclave.add', { id, offset: '0x' + offset.toString(16), page: hex(page), flags });
  }
  async enclaveExtend(id: number, offset: bigint): Promise<void> {
    await this.rpc.call('enclave.extend', { id, offset: '0x' + offset.toString(16) });
  }
  async enclaveAddPages(id: number, pages: readonly { offset: bigint; data: Buffer; flags: number; measure: boolean }[]): Promise<void> {
    // Batches keep each request well under the RPC limit (64 pages ≈ 520 KiB of JSON).
    for (let i = 0; i < pages.length; i += 64) {
      await this.rpc.call('enclave.add', {
        id,
        pages: pages.slice(i, i + 64).map((p) => ({ offset: '0x' + p.offset.toString(16), page: hex(p.data), flags: p.flags, measure: p.measure })),
      });
    }
  }
  async enclaveInit(id: number, sigstruct: Buffer): Promise<void> {
    await this.rpc.call('enclave.init', { id, sigstruct: hex(sigstruct) });
  }
  async enclaveEnter(id: number, tcs: bigint): Promise<EntryInfo> {
    const r = await this.rpc.call<{ entry: string; tcs: string; ssa: string }>('enclave.enter', { id, tcs: '0x' + tcs.toString(16) });
    return { entry: big(r.entry), tcs: big(r.tcs), ssa: big(r.ssa) };
  }
  async enclaveExit(id: number, tcs: bigint): Promise<void> {
    await this.rpc.call('enclave.exit', { id, tcs: '0x' + tcs.toString(16) });
  }
  async enclaveDestroy(id: number): Promise<number> {
    return (await this.rpc.call<{ epcPages: number }>('enclave.destroy', { id })).epcPages;
  }
  async enclaveInfo(id: number): Promise<EnclaveInfoRecord> {
    return reviveInfo(await this.rpc.call<Record<string, unknown>>('enclave.info', { id }));
  }
  enclaveList(): Promise<EnclaveSummary[]> {
    return this.rpc.call<EnclaveSummary[]>('enclave.list');
  }
  verifyReport(report: Buffer, targetMrenclave: Buffer): Promise<boolean> {
    return this.rpc.call<boolean>('verifyReport', { report: hex(report), mrenclave: hex(targetMrenclave) });
  }
  async trustInit(blob?: Buffer): Promise<TrustInitResult> {
    const r = await this.rpc.call<{ created: boolean; pcrExtended: boolean; blob: string | null; hakPublic: string; hakPcr: number }>('trustInit', blob ? { blob: hex(blob) } : {});
    return {
      created: r.created,
      pcrExtended: r.pcrExtended,
      ...(r.blob ? { blob: Buffer.from(r.blob, 'hex') } : {}),
      hakPublic: Buffer.from(r.hakPublic, 'hex'),
      hakPcr: r.hakPcr,
    };
  }
  async hakPublic(): Promise<{ key: Buffer; pcr: number }> {
    const r = await this.rpc.call<{ key: string; pcr: number }>('hakPublic');
    return { key: Buffer.from(r.key, 'hex'), pcr: r.pcr };
  }
  async quote(report: Buffer): Promise<Buffer> {
    return Buffer.from(await this.rpc.call<string>('quote', { report: hex(report) }), 'hex');
  }
  keyslotAlloc(owner?: number): Promise<number> {
    return this.rpc.call<number>('keyslot.alloc', owner === undefined ? {} : { owner });
  }
  async keyslotBind(slot: number, owner: number): Promise<void> {
    await this.rpc.call('keyslot.bind', { slot, owner });
  }
  async keyslotRelease(slot: number): Promise<void> {
    await this.rpc.call('keyslot.release', { slot });
  }
  keyslotFlush(): Promise<number> {
    return this.rpc.call<number>('keyslot.flush');
  }
  async enclaveLaunch(id: number, backend: BackendKind, policy?: number): Promise<LaunchResult> {
    const r = await this.rpc.call<{ backend: BackendKind; keySlot: number | null; measurement: Record<string, unknown> }>('enclave.launch', {
      id,
      backend,
      ...(policy !== undefined ? { policy } : {}),
    });
    return { backend: r.backend, keySlot: r.keySlot, measurement: reviveLaunch(r.measurement) };
  }
  async enclaveRun(id: number, ecalls: readonly EcallRequest[], opts: EnclaveRunOptions = {}): Promise<EcallResult[]> {
    const table = opts.ocalls;
    if (!table) return this.runBatch(id, ecalls);
    // The service runs the enclave; it sends each OCALL back here, on a socket of this run.
    const srv = await serveOcalls((nr, input) => {
      const f = Object.prototype.hasOwnProperty.call(table, nr) ? table[nr] : undefined;
      if (typeof f !== 'function') throw new HypervisorError(`OCALL ${nr}: no such entry`, EXIT.BAD_INPUT);
      return f(input) ?? Buffer.alloc(0);
    });
    try {
      return await this.runBatch(id, ecalls, srv.path);
    } finally {
      srv.close();
    }
  }
  private async runBatch(id: number, ecalls: readonly EcallRequest[], ocallSocket?: string): Promise<EcallResult[]> {
    const r = await this.rpc.call<{ fn: number; ok: boolean; ret: string | null; output: string; error: string | null; micros: number }[]>('enclave.run', {
      id,
      ecalls: ecalls.map((e) => ({
        fn: e.fn,
        ...(e.input ? { input: hex(e.input) } : {}),
        ...(e.tcs !== undefined ? { tcs: '0x' + e.tcs.toString(16) } : {}),
        ...(e.timeoutMs !== undefined ? { timeoutMs: e.timeoutMs } : {}),
      })),
      ...(ocallSocket ? { ocallSocket } : {}),
    });
    return r.map((x) => ({ ...x, ret: x.ret === null ? null : big(x.ret), output: Buffer.from(x.output, 'hex') }));
  }
  async enclaveMemory(id: number, offset: bigint, length: number, view: 'enclave' | 'host'): Promise<Buffer> {
    return Buffer.from(await this.rpc.call<string>('enclave.memory', { id, offset: '0x' + offset.toString(16), length, view }), 'hex');
  }
  hostAccess(gpa: bigint, access: HostAccessKind): Promise<string | null> {
    return this.rpc.call<string | null>('hostAccess', { gpa: '0x' + gpa.toString(16), access });
  }
  close(): void {
    this.rpc.close();
  }
}
