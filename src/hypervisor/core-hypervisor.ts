import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { EXIT } from '../errors.js';
import { ECALL, HC, HypervisorError, decodeEnclaveInfo, decodeStatus, encodeMemoryMap, encodeSecs, ENCLAVE_INFO_SIZE, PAGE_SIZE, STATUS_SIZE } from './abi.js';
import type { EnclaveInfoRecord, HvStatusRecord, MemRangeSpec, SecsSpec } from './abi.js';
import type { CoreConfig } from './core-binding.js';
import { AddonError, loadAddon, wrap } from './addon.js';
import { EnclaveVm, loadPayload, vmCall, type EnclavePayload } from './enclave-vm.js';

/**
 * hyperenclave-core living in this process (the emulated platform's hypervisor), and SIGSTRUCTs
 * built with the core's layout code.
 */

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
